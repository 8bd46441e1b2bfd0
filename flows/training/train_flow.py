"""Train stage: run a TRL trainer on a build output, as a plain function and as a Prefect flow."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from prefect import flow

from flows.recipe import Recipe
from serving.errors import ConfigError


def train_method(method: str, **fields: Any) -> Path:
    """Build the method's config (trainers/configs.py) from `fields` (None values: the trainer's default)
    and train; returns the folder. A field the method does not take is refused, never dropped."""
    import importlib

    from pydantic import ValidationError

    from trainers.configs import METHOD_CONFIGS

    config_cls = METHOD_CONFIGS[method]
    given = {k: v for k, v in fields.items() if v is not None and k != "method"}
    unknown = sorted(set(given) - set(config_cls.model_fields))
    if unknown:
        raise ConfigError(f"train {method}: {', '.join(unknown)}: not a field of the {method} trainer; "
                          f"fields: {', '.join(sorted(config_cls.model_fields))}")  # fmt: skip
    try:
        config = config_cls(**given)
    except ValidationError as exc:
        err = exc.errors()[0]
        raise ConfigError(f"train {method}: {'.'.join(map(str, err['loc']))}: {err['msg']}") from None
    return importlib.import_module(f"trainers.{method}").train(config)


@flow(name="rlaif-train")
def train_flow(method: str, fields: dict[str, Any]) -> str:
    return str(train_method(method, **fields))


def train_once(method: str, fields: dict[str, Any]) -> tuple[str, bool]:
    """(the model folder, whether it was there already): a re-run of a finished run does not train again
    when the method, fields, dataset, base model and trainer libraries are the ones it was trained under."""
    from flows.training.trained_before import mark_trained, train_key, trained_before

    key = train_key(method, fields)
    if trained_before(fields["output"], key):
        return fields["output"], True
    path = train_flow(method, fields)
    mark_trained(path, key)
    return path, False


def train_after_build(recipe: Recipe, out: Path) -> dict[str, Any]:
    """The recipe's `train:` section, run on the dataset the pipeline just built. PPO without a
    `reward_model` first trains one on the same pairs (OUT/models/reward, `reward_training:` fields).
    A model this run already trained under the same key is kept (`cached`), not trained again."""
    import json
    import time

    spec = recipe.train
    assert spec is not None
    t0 = time.monotonic()
    model = spec.model or recipe.policy.model
    fields = {
        **spec.fields(),
        "model": model,
        "dataset": str(out),
        "output": str(out / "models" / spec.method),
    }
    reward: dict[str, Any] = {}
    if spec.method == "ppo" and not spec.reward_model:
        rm_fields = {"model": model, **(spec.reward_training or {}), "dataset": str(out),
                     "output": str(out / "models" / "reward")}  # fmt: skip
        fields["reward_model"], rm_cached = train_once("reward", rm_fields)
        rm_metrics = json.loads((Path(fields["reward_model"]) / "metrics.json").read_text())
        reward = {"reward_model": fields["reward_model"],
                  "reward_test_accuracy": rm_metrics.get("test_accuracy"),
                  "reward_train_accuracy": rm_metrics.get("train_accuracy"), "reward_cached": rm_cached}  # fmt: skip
    path, cached = train_once(spec.method, fields)
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    return {"method": spec.method, "output": path, **reward, "train_s": round(time.monotonic() - t0, 2),
            "cached": cached, **{k: v for k, v in metrics.items() if k != "log_history"}}  # fmt: skip
