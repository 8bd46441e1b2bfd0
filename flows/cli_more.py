"""More `rlaif` sub-commands: judge-eval and constitution check."""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from serving.errors import RlaifError


def cmd_constitution_check(args: argparse.Namespace) -> int:
    from judges.constitution import load_constitution

    failed = 0
    for f in args.files:
        try:
            print(load_constitution(f).summary())
        except RlaifError as exc:
            print(f"rlaif: error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from flows.endpoints import live_endpoints
    from flows.judge_eval import evaluate, load_pairs
    from flows.recipe import Recipe, load_recipe
    from serving.client import run_sync, shared_client

    pairs = load_pairs(Path(args.pairs))
    if args.limit:
        pairs = pairs[: args.limit]
    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    spec = next((j for j in recipe.judges if j.type == args.judge), None)
    served = recipe.judge_endpoint(spec.judge if spec else None)
    with live_endpoints(served) as (eps,):
        client = shared_client(eps, recipe.client)
        result = run_sync(lambda: evaluate(client, pairs, args.judge, args.seed))
    print(json.dumps(result.model_dump()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("judge-eval", help="measure a judge on labelled pairs (accuracy, consistency)")
    p.add_argument("--pairs", required=True, help="JSONL with prompt, chosen, rejected (strings)")
    p.add_argument("--judge", choices=["pairwise", "ultrafeedback"], default="pairwise")
    p.add_argument("--recipe", help="recipe whose judge endpoint to use (default: bundled local model)")
    p.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    p.add_argument("--seed", type=int, default=0, help="seed for the order each pair is shown in")
    p.set_defaults(fn=cmd_judge_eval)

    p = sub.add_parser("constitution", help="constitution files")
    csub = p.add_subparsers(dest="action", required=True)
    c = csub.add_parser("check", help="validate constitution files; one summary line per file")
    c.add_argument("files", nargs="+")
    c.set_defaults(fn=cmd_constitution_check)
