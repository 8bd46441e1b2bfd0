"""`rlaif schedule`: register a Prefect deployment of a recipe on a cron or interval and serve it.

Runs of one deployment never overlap (global concurrency limit 1, later runs wait); each run writes
to its own dated folder.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from serving.errors import ConfigError


def schedule(
    recipe_path: str, cron: str | None = None, interval: float | None = None, name: str | None = None,
    limit: int | None = None, iterate: bool = False,
) -> None:  # fmt: skip
    """Blocks, serving the deployment: Prefect's scheduler creates runs, this process executes them."""
    from prefect.client.schemas.objects import ConcurrencyLimitConfig, ConcurrencyLimitStrategy

    from flows.pipeline import pipeline_flow
    from flows.recipe import load_recipe

    if bool(cron) == bool(interval):
        raise ConfigError('give exactly one of --cron (e.g. "0 2 * * *") or --interval SECONDS')
    if cron:
        from prefect.client.schemas.schedules import CronSchedule

        try:
            CronSchedule(cron=cron)
        except ValueError as exc:
            raise ConfigError(f"--cron {cron!r} is not a valid cron string: {exc}") from None
    recipe = load_recipe(recipe_path)  # validate now, not at 2 a.m.
    params = {"recipe_path": str(Path(recipe_path).resolve()), "limit": limit, "dated": True}
    target = pipeline_flow
    if iterate:  # one round per scheduled run, continuing in the recipe's own folder
        from flows.rounds.flow import iterate_flow

        if limit:
            raise ConfigError("--limit does not apply to --iterate (set prompts.limit in the recipe)")
        target, params = iterate_flow, {"recipe_path": params["recipe_path"], "next_only": True}
    target.serve(
        name=name or recipe.name, cron=cron, interval=interval, parameters=params,
        global_limit=ConcurrencyLimitConfig(limit=1, collision_strategy=ConcurrencyLimitStrategy.ENQUEUE),
        tags=["rlaif", recipe.name], description=f"rlaif {'rounds' if iterate else 'pipeline'} for {recipe_path}",
    )  # fmt: skip


def cmd_schedule(args: argparse.Namespace) -> int:
    schedule(
        args.recipe,
        cron=args.cron,
        interval=args.interval,
        name=args.name,
        limit=args.limit,
        iterate=args.iterate,
    )
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("schedule", help="register a deployment with a cron schedule and serve it")
    p.add_argument("recipe")
    p.add_argument("--cron", default=None, help='cron string, e.g. "0 2 * * *"')
    p.add_argument("--interval", type=float, default=None, help="seconds between runs instead of cron")
    p.add_argument("--name", default=None, help="deployment name (default: the recipe's name)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--iterate", action="store_true",
                   help="each scheduled run does the next on-policy round (`rlaif iterate --next`)")  # fmt: skip
    p.set_defaults(fn=cmd_schedule)
