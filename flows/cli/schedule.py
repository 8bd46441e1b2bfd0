"""`rlaif schedule`: register a Prefect deployment of a recipe on a cron or interval and serve it."""

from __future__ import annotations

import argparse


def cmd_schedule(args: argparse.Namespace) -> int:
    from flows.schedule import schedule

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
