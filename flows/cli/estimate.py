"""`rlaif estimate`: requests, tokens and USD per stage and judge of a recipe's run, before any request.

Nothing is sent: a sample of the prompts goes through the real request builders (flows/engine/cost_estimate.py).
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path


def cmd_estimate(args: argparse.Namespace) -> int:
    from flows.cli.run import load_with_overrides
    from flows.engine.cost_estimate import estimate_recipe, plan_for

    recipe, out = load_with_overrides(args)
    recipe_dir = Path(args.recipe).parent
    plan = plan_for(recipe, out, recipe_dir)
    once = []
    if recipe.gate is not None:
        from flows.evals.gate import Gate

        once = Gate(recipe, recipe_dir, out).estimate_requests()
    est = estimate_recipe(recipe, out, recipe_dir, sample=args.sample, plan=plan, once=once)
    data = json.dumps(est.model_dump(), indent=2) + "\n"
    if args.json == "-":
        sys.stdout.write(data)
        return 0
    if args.json:
        from flows.dataset.atomic_files import atomic_write_text
        from serving.errors import ConfigError

        try:
            atomic_write_text(Path(args.json), data)
        except OSError as exc:
            raise ConfigError(f"--json {args.json}: cannot write it ({exc.strerror or exc})") from None
    print(f"rlaif estimate: {args.recipe} -> {out}")
    print(est.table())
    print(est.line(recipe.budget))
    return 0


def _positive(text: str) -> int:
    value = int(text)
    if value < 1:
        raise argparse.ArgumentTypeError("must be at least 1")
    return value


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "estimate", help="requests, tokens and USD per stage of a recipe, before any request",
        description="Estimate what `rlaif run RECIPE` will send: requests, prompt and completion tokens and "
        "USD (at the recipe's `price:`) per stage and judge, for the whole prompt set. A sample of the "
        "prompts is rendered through the real request builders (generation, every judge, the critique, "
        "the gate) and nothing is sent. Prompt tokens come from the model's tokenizer when it is local, "
        "else characters/4 (said so). Completion tokens: every answer at max_tokens (the upper figure) "
        "and, when the run folder has a journal or summary.json from an earlier run, the observed mean.",
    )  # fmt: skip
    p.add_argument("recipe", help="recipe YAML (see recipes/demo.yaml)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--out", help="run folder whose earlier answers give the observed lengths (default: the "
                   "recipe's `output`); nothing is written there")  # fmt: skip
    p.add_argument("--sample", type=_positive, default=64, metavar="N",
                   help="prompts to render (default 64); the figures are scaled to the whole set")  # fmt: skip
    p.add_argument("--json", metavar="OUT", help="also write the figures as JSON to OUT ('-': only the JSON, "
                   "on stdout); `total` holds requests, prompt_tokens, completion_tokens and usd")  # fmt: skip
    p.set_defaults(fn=cmd_estimate)
