"""`rlaif train`, `rlaif eval-policy` and `rlaif schedule` sub-commands."""

from __future__ import annotations

import argparse


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    return None
