"""`rlaif judge-eval`: can I trust this judge? Accuracy on labelled pairs with an interval, position
bias, calibration and the margin over a "longer answer wins" baseline."""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from flows.recipe import Recipe
    from judges.contract import Judge, JudgeConfig


def pick_judge(args: argparse.Namespace, recipe: Recipe) -> tuple[JudgeConfig, type[Judge]]:
    """The judge config and class that `--judge` names: a judge of the recipe, the constitution label
    judge (`--constitution FILE`, or the recipe's `critique:`), or a registered judge type."""
    from judges.constitution_judge import ConstitutionLabelConfig, ConstitutionLabelJudge
    from judges.registry import judge_class, parse_judge_config
    from serving.errors import ConfigError

    candidates: list[tuple[JudgeConfig, type[Judge]]] = [(j, judge_class(j.type)) for j in recipe.judges]
    label = None
    if args.constitution or recipe.critique:
        crit = recipe.critique
        label = ConstitutionLabelConfig(
            constitution=args.constitution or crit.constitution,
            **({"principles": crit.principles, "seed": crit.seed, "judge": crit.judge} if crit else {}),
        )
        candidates.append((label, ConstitutionLabelJudge))
    name = args.judge or (ConstitutionLabelJudge.type if args.constitution else "pairwise")
    picked = next(((c, cls) for c, cls in candidates if name in (c.key, c.type)), None)
    if picked is None:
        try:
            config = parse_judge_config({"type": name})
        except ValueError as exc:
            why = str(exc).splitlines()[-1].split(" [type=")[0].strip()
            raise ConfigError(f"--judge {name}: {why}; or a judge name of --recipe; "
                              f"`{ConstitutionLabelJudge.type}` needs --constitution FILE or a recipe with "
                              "critique:") from None  # fmt: skip
        picked = (config, judge_class(config.type))
    if args.constitution and picked[0] is not label:
        raise ConfigError(f"--constitution is for --judge {ConstitutionLabelJudge.type}, not --judge {name}")
    return picked


def cmd_judge_eval(args: argparse.Namespace) -> int:
    from flows.dataset.atomic_files import atomic_write_text, check_writable
    from flows.engine.live_endpoints import live_endpoints
    from flows.evals.judge_eval import JudgeEval, evaluate, format_table, load_pairs
    from flows.recipe import Recipe, load_recipe
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
    config, cls = pick_judge(args, recipe)

    def run(client: Any) -> JudgeEval:
        judge = cls(config, client)
        return run_sync(lambda: evaluate(judge, pairs, seed=args.seed, resamples=args.resamples))

    if cls.uses_endpoint:
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
