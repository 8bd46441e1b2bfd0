"""`rlaif review`: a local page over a run's pairs to read, filter and decide them (accept, flip, tie,
drop), and `--export-gold` to turn those decisions into judge-eval pairs."""

from __future__ import annotations

import argparse
from pathlib import Path


def cmd_review(args: argparse.Namespace) -> int:
    from flows.review.index import RunIndex

    if args.export_gold:
        from flows.dataset.atomic_files import check_writable
        from serving.errors import ConfigError

        out = Path(args.export_gold)
        try:
            check_writable(out.parent)
        except ConfigError as exc:
            raise ConfigError(f"--export-gold {out}: {str(exc).removesuffix(' (set --out)')}") from None
    ix = RunIndex(Path(args.run))  # one-line errors: not a run, no binarized/, a malformed decision
    if args.export_gold:
        from flows.review.gold import export_gold

        res = export_gold(ix, out)
        extra = [f"{n} {why}" for n, why in ((res.dropped, "drops left out"),
                                             (res.missing, "decisions whose pair is gone left out")) if n]  # fmt: skip
        print(
            f"review: {res.pairs} decided pairs written to {out}"
            + (f" ({', '.join(extra)})" if extra else "")
        )
        print(f"next: rlaif judge-eval --pairs {out} --recipe RECIPE  (or a recipe's gate: {{pairs: {out}}})")
        return 0
    from flows.review.server import serve

    serve(ix, host=args.host, port=args.port, reviewer=args.reviewer)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "review",
        help="read a run's pairs in the browser, filter them, and accept/flip/tie/drop them",
        description="Serve a page over RUN's pairs (least certain first; filters for judge disagreement, "
        "low margin, truncation, duplicate prompts, origin, principle, text). Decisions (keys a/f/t/d) "
        "are appended to RUN/review/decisions.jsonl; re-running `rlaif run` on the recipe rebuilds the "
        "datasets with them (0 model requests): flipped pairs swapped, dropped ones removed, decided "
        "ones marked origin: human. The schema of a decision line is in the README.",
        epilog="examples:\n  rlaif review runs/demo                 # then open http://127.0.0.1:8790/\n"
        "  rlaif review runs/demo --export-gold gold.jsonl && rlaif judge-eval --pairs gold.jsonl",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("run", help="a run folder (what `rlaif run` wrote: the recipe's `output`)")
    p.add_argument("--port", type=int, default=8790, help="port (default 8790)")
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1: this machine only)")
    p.add_argument("--reviewer", help="a name written with each decision (default: none)")
    p.add_argument(
        "--export-gold",
        metavar="FILE",
        help="write the decided pairs as judge-eval pairs (prompt, chosen, rejected, tie, category) and exit",
    )
    p.set_defaults(fn=cmd_review, uses_prefect=False)
