"""Train stage: run a TRL trainer on a build output, as a plain function and as a Prefect flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.recipe import Recipe
from serving.errors import ConfigError


def train_method(method: str, **fields: Any) -> Path:
    """Build the method's config from `fields` (None values dropped) and train; returns the folder."""
    from pydantic import ValidationError

    from trainers import dpo, ppo, reward, sft

    module, config_cls = {
        "sft": (sft, sft.SFTTrainConfig), "dpo": (dpo, dpo.DPOTrainConfig),
        "reward": (reward, reward.RewardTrainConfig), "ppo": (ppo, ppo.PPOTrainConfig),
    }[method]  # fmt: skip
    clean = {
        k: v for k, v in fields.items() if v is not None and k in config_cls.model_fields and k != "method"
    }
    try:
        config = config_cls(**clean)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"train {method}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return module.train(config)


@flow(name="rlaif-train")
def train_flow(method: str, fields: dict[str, Any]) -> str:
    return str(train_method(method, **fields))


def train_after_build(recipe: Recipe, out: Path) -> dict[str, Any]:
    """The recipe's `train:` section, run on the dataset the pipeline just built."""
    import json

    spec = recipe.train
    assert spec is not None
    output = out / "models" / spec.method
    fields = spec.model_dump(exclude={"method"})
    fields.update(model=spec.model or recipe.policy.model, dataset=str(out), output=str(output))
    path = train_flow(spec.method, fields)
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    return {"method": spec.method, "output": path,
            **{k: v for k, v in metrics.items() if k != "log_history"}}  # fmt: skip
