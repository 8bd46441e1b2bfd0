"""More `rlaif` sub-commands (judge-eval, constitution, train, eval-policy, schedule)."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    return None
