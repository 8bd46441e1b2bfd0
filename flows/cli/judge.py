"""`rlaif judge-eval`: measure one judge on labelled pairs (accuracy, consistency)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from flows.endpoints import live_endpoints
    from flows.judge_eval import evaluate, load_pairs
    from flows.recipe import Recipe, load_recipe
    from judges.registry import make_judge, parse_judge_config
    from serving.client import run_sync, shared_client
    from serving.errors import ConfigError

    pairs = load_pairs(Path(args.pairs))
    if args.limit:
        pairs = pairs[: args.limit]
    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    config = next((j for j in recipe.judges if args.judge in (j.key, j.type)), None)
    if config is None:
        try:
            config = parse_judge_config({"type": args.judge})
        except ValueError as exc:
            raise ConfigError(f"--judge {args.judge}: {str(exc).splitlines()[-1].strip()} "
                              "(or name a judge of --recipe)") from None  # fmt: skip
    served = recipe.judge_endpoint(config.judge)
    with live_endpoints(served) as (eps,):
        judge = make_judge(config, shared_client(eps, recipe.client))
        result = run_sync(lambda: evaluate(judge, pairs))
    print(json.dumps(result.model_dump()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("judge-eval", help="measure a judge on labelled pairs (accuracy, consistency)")
    p.add_argument("--pairs", required=True, help="JSONL with prompt, chosen, rejected (strings)")
    p.add_argument("--judge", default="pairwise",
                   help="a judge type (ultrafeedback, pairwise, reward_model...) or a judge name in --recipe")  # fmt: skip
    p.add_argument("--recipe", help="recipe whose judge endpoint to use (default: bundled local model)")
    p.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    p.set_defaults(fn=cmd_judge_eval)
