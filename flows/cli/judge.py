"""`rlaif judge-eval`: can I trust this judge? Accuracy on labelled pairs with an interval, position
bias, calibration and the margin over a "longer answer wins" baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.recipe import Recipe
    from judges.contract import JudgeConfig


def pick_judge(args: argparse.Namespace, recipe: Recipe) -> JudgeConfig:
    """The judge `--judge` names: a judge of `--recipe` (its name or type, its `critique:` section
    included), else a registered judge type. Options such as `--constitution FILE` go into the judge's
    config; without `--judge` they pick the one judge type that takes them."""
    from judges.registry import pick
    from serving.errors import ConfigError

    options = {"constitution": args.constitution}
    try:
        config = pick(recipe.feedback(), args.judge, options)
    except ValueError as exc:
        errors = getattr(exc, "errors", None)
        first = errors()[0] if callable(errors) else None
        why = (
            f"{'.'.join(map(str, first['loc']))}: {first['msg']}" if first else str(exc).splitlines()[0]
        ).strip()
        given = " ".join(f"--{k} {v}" for k, v in options.items() if v) or "no options"
        raise ConfigError(f"--judge {args.judge or '(default)'} with {given}: {why}; name a judge type, "
                          "or a judge name of --recipe") from None  # fmt: skip
    return config.resolved(Path(args.recipe).parent if args.recipe else None)


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from flows.dataset.atomic_files import atomic_write_text, check_writable
    from flows.engine.live_endpoints import live_endpoints
    from flows.evals.judge_eval import JudgeEval, evaluate, format_table, load_pairs
    from flows.recipe import Recipe, load_recipe
    from judges.registry import make_judge
    from serving.errors import ConfigError
    from serving.shared import run_sync, shared_client

    if args.resamples < 1:
        raise ConfigError(f"--resamples {args.resamples}: must be at least 1")
    if args.json and args.json != "-":
        try:  # before any model call
            check_writable(Path(args.json).parent)
        except ConfigError as exc:
            raise ConfigError(f"--json {args.json}: {str(exc).removesuffix(' (set --out)')}") from None
    pairs = load_pairs(Path(args.pairs))
    if args.limit:
        pairs = pairs[: args.limit]
    recipe = load_recipe(args.recipe) if args.recipe else Recipe()
    config = pick_judge(args, recipe)
    judge = make_judge(config)  # built once (reads its files now), bound to the endpoint's client below

    def run(client: Any) -> JudgeEval:
        return run_sync(lambda: evaluate(judge.bind(client), pairs, seed=args.seed, resamples=args.resamples))

    if judge.uses_endpoint:
        with live_endpoints(recipe.judge_endpoint(config.judge)) as (eps,):
            result = run(shared_client(eps, recipe.client))
    else:  # scored locally: no model server
        result = run(None)
    if args.json == "-":  # one line, for pipes
        print(result.model_dump_json())
        return 0
    print(format_table(result))
    if args.json:
        atomic_write_text(Path(args.json), result.model_dump_json(indent=2) + "\n")
        print(f"figures written to {args.json}")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "judge-eval",
        help="can I trust this judge? accuracy [95%% ci], position bias, calibration, length baseline",
        description="Judge labelled pairs, each in both orders, and print: accuracy with a bootstrap "
        "interval, consistency (both orders agree), p_first (share of single-order wins by the answer "
        "shown first), tie rate, the accuracy of 'the longer answer wins' and the judge's margin over "
        "it, soft accuracy and Brier score (judges with logprobs); a row per category. "
        "How to read them: docs/JUDGES.md.",
        epilog="example: rlaif judge-eval --pairs data/gold/pairs.jsonl --judge pairwise --json eval.json",
    )
    p.add_argument("--pairs", required=True,
                   help="JSONL: prompt, chosen, rejected (strings); optional tie (bool: humans saw no "
                   "winner), category (string). data/gold/pairs.jsonl is a small bundled set")  # fmt: skip
    p.add_argument("--judge",
                   help="a judge type (ultrafeedback, pairwise, reward_model...), a judge name in "
                   "--recipe, or `constitution` (the constitution's label judge); default pairwise, "
                   "or constitution with --constitution")  # fmt: skip
    p.add_argument(
        "--constitution",
        metavar="FILE",
        help="constitution YAML for --judge constitution (default: the recipe's critique:)",
    )
    p.add_argument("--recipe", help="recipe whose judge endpoint to use (default: bundled local model)")
    p.add_argument("--limit", type=int, help="evaluate only the first N pairs")
    p.add_argument(
        "--json",
        metavar="OUT",
        help="also write the figures as JSON to OUT (`-`: one JSON line to stdout, no table)",
    )
    p.add_argument("--seed", type=int, default=0, help="bootstrap seed (default 0)")
    p.add_argument("--resamples", type=int, default=1000, help="bootstrap resamples (default 1000)")
    p.set_defaults(fn=cmd_judge_eval)
