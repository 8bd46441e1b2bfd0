"""`rlaif constitution check`: validate constitution files, one summary line per file.

Every file is checked; a bad one prints its error and the command exits 2 at the end.
"""

from __future__ import annotations

import argparse
import sys

from serving.errors import RlaifError


def cmd_constitution_check(args: argparse.Namespace) -> int:
    from judges.constitution_file import load_constitution

    failed = 0
    for f in args.files:
        try:
            print(load_constitution(f).summary())
        except RlaifError as exc:
            print(f"rlaif: error: {exc}", file=sys.stderr)
            failed += 1
    return 2 if failed else 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("constitution", help="constitution files")
    csub = p.add_subparsers(dest="action", required=True)
    c = csub.add_parser("check", help="validate constitution files; one summary line per file")
    c.add_argument("files", nargs="+")
    c.set_defaults(fn=cmd_constitution_check)
