"""`rlaif train` (SFT, DPO, reward model, PPO with TRL) and `rlaif eval-policy` (win rate of A over B)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any


def trainer_options() -> dict[str, tuple[Any, set[str]]]:
    """Every trainer config field (trainers/configs.py) -> (its field info, the methods that take it):
    `rlaif train`'s options are derived from them, not declared again."""
    from trainers.configs import METHOD_CONFIGS, RUN_FIELDS

    out: dict[str, tuple[Any, set[str]]] = {}
    for method, cls in METHOD_CONFIGS.items():
        for name, info in cls.model_fields.items():
            if name not in RUN_FIELDS:
                out.setdefault(name, (info, set()))[1].add(method)
    return out


def cmd_train(args: argparse.Namespace) -> int:
    from flows.training.train_flow import train_method

    output = args.output or str(Path(args.dataset) / "models" / args.method)
    fields = {name: getattr(args, name) for name in trainer_options()}
    path = train_method(args.method, dataset=args.dataset, output=output, **fields)
    metrics = json.loads((path / "metrics.json").read_text())
    print(json.dumps({"output": str(path), **{k: v for k, v in metrics.items() if k != "log_history"}}))
    return 0


def cmd_eval_policy(args: argparse.Namespace) -> int:
    from flows.evals.policy_eval import eval_policy

    result = eval_policy(args.model, args.baseline, args.prompts, column=args.column, limit=args.limit,
                         judge_recipe=args.recipe, max_tokens=args.max_tokens, port=args.port)  # fmt: skip
    print(json.dumps(result.model_dump()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    from trainers.configs import METHOD_CONFIGS

    p = sub.add_parser("train", help="train on a build output: sft | dpo | reward | ppo (TRL)",
                       description="Train with TRL on a build output. Every option is a field of the "
                       "method's trainer config (trainers/configs.py); left out, the trainer's default holds.")  # fmt: skip
    p.add_argument("method", choices=["sft", "dpo", "reward", "ppo"])
    p.add_argument("--dataset", required=True, help="build output folder (has binarized/)")
    p.add_argument("--output", default=None, help="output folder (default: DATASET/models/METHOD)")
    for name, (info, methods) in trainer_options().items():
        flag = "--" + name.replace("_", "-")
        only = "" if len(methods) == 4 else f" ({', '.join(sorted(methods))} only)"
        defaults = {METHOD_CONFIGS[m].model_fields[name].default for m in methods}
        default = info.default if len(defaults) == 1 else "per method"
        help_text = f"{info.description or name.replace('_', ' ')}{only}; default {default}"
        if info.annotation is bool or info.annotation == "bool":
            p.add_argument(flag, dest=name, action="store_const", const=True, default=None, help=help_text)
        else:
            kind = {"int": int, "float": float}.get(str(info.annotation), None) or (
                info.annotation if info.annotation in (int, float) else str)  # fmt: skip
            p.add_argument(flag, dest=name, type=kind, default=None, metavar=name.upper(), help=help_text)
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval-policy", help="win rate of model A over baseline B, judged pairwise")
    p.add_argument("--model", required=True, help="model folder A (e.g. a DPO output)")
    p.add_argument("--baseline", required=True, help="model folder or name B (e.g. smollm2-135m-instruct)")
    p.add_argument("--prompts", required=True, help="held-out prompts (JSONL/Parquet/CSV/datasets folder)")
    p.add_argument("--column", default="prompt", help="prompt column ('turns' for MT-bench files)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--recipe", default=None, help="recipe whose pairwise judge endpoint to use")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--port", type=int, default=8766, help="port for serving A and B in turn")
    p.set_defaults(fn=cmd_eval_policy)
