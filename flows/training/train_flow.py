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


def train_after_build(recipe: Recipe, out: Path) -> dict[str, Any]:
    """The recipe's `train:` section, run on the dataset the pipeline just built."""
    import json

    spec = recipe.train
    assert spec is not None
    output = out / "models" / spec.method
    fields = {
        **spec.fields(),
        "model": spec.model or recipe.policy.model,
        "dataset": str(out),
        "output": str(output),
    }
    path = train_flow(spec.method, fields)
    metrics = json.loads((Path(path) / "metrics.json").read_text())
    return {"method": spec.method, "output": path,
            **{k: v for k, v in metrics.items() if k != "log_history"}}  # fmt: skip
