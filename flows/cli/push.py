"""`rlaif push`: a finished run's dataset (card, Parquet files, report, review decisions) to the Hugging
Face Hub as a dataset repo, in one commit; `--dry-run` shows what would go up."""

from __future__ import annotations

import argparse


def _size(n: int) -> str:
    return f"{n:,} B" if n < 1024 else f"{n / 1024:,.1f} KiB" if n < 1024**2 else f"{n / 1024**2:,.1f} MiB"


def cmd_push(args: argparse.Namespace) -> int:
    from pathlib import Path

    from flows.hub.upload import push

    result = push(Path(args.run), args.repo, private=args.private, revision=args.revision,
                  dry_run=args.dry_run)  # fmt: skip
    plan = result.plan
    where = f"dataset {args.repo} on {result.endpoint} ({'private, ' if args.private else ''}revision {args.revision})"
    width = max(len(f.path_in_repo) for f in plan.files)
    verb = "would push" if args.dry_run else "pushed"
    print(f"{verb} {len(plan.files)} files ({_size(plan.total_bytes)}) to {where}:")
    for f in plan.files:
        print(f"  {f.path_in_repo.ljust(width)}  {f.size:>12,} bytes")
    if args.dry_run:
        print(f"card header ({', '.join(plan.configs)} configs):")
        print("---\n" + plan.card_header.rstrip("\n") + "\n---")
        print("dry run: nothing was uploaded (no request was made)")
        return 0
    print(f"one commit {result.commit_oid}: {result.commit_url}")
    names = ", ".join(f'"{c}"' for c in plan.configs)
    print(f'load it: datasets.load_dataset("{args.repo}", NAME) with NAME one of {names}')
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "push",
        help="upload a finished run's dataset to the Hugging Face Hub (one commit; --dry-run to look first)",
        description="Upload a finished run (a folder with build.json) to a Hugging Face dataset repo, in\n"
        "one commit: the dataset card README.md (its YAML `configs:` make the repo loadable by name),\n"
        "parquet/**/*.parquet, report/*.png, and review/decisions.jsonl when present. summary.json and\n"
        "build.json stay local (local paths, endpoint URLs). The repo is created when missing.\n\n"
        "The token comes from HF_TOKEN or the saved login (`hf auth login`) and is never printed;\n"
        "HF_ENDPOINT points at another Hub. Nothing is sent unless the run, its card and --repo check out.",
        epilog="examples:\n"
        "  rlaif push runs/demo --repo my-org/demo-prefs --dry-run   # what would go up, the card header\n"
        "  HF_TOKEN=hf_... rlaif push runs/demo --repo my-org/demo-prefs --private\n\n"
        "then, anywhere:\n"
        "  from datasets import load_dataset\n"
        '  pairs = load_dataset("my-org/demo-prefs", "binarized")["train_prefs"]   # prompt/chosen/rejected\n'
        '  rows = load_dataset("my-org/demo-prefs", "ultrafeedback")["train"]',
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument(
        "run", metavar="RUN", help="a finished run folder (the --out of `rlaif run`, e.g. runs/demo)"
    )
    p.add_argument("--repo", required=True, metavar="ORG/NAME", help="the dataset repo, e.g. my-org/my-prefs")
    p.add_argument("--private", action="store_true",
                   help="create the repo private (without it: the namespace's default, public unless the "
                   "organization defaults to private); an existing repo keeps its visibility")  # fmt: skip
    p.add_argument("--revision", default="main", help="an existing branch to commit to (default main)")
    p.add_argument("--dry-run", action="store_true",
                   help="make no request and need no token: list the files (repo path, size) and the card header")  # fmt: skip
    p.set_defaults(fn=cmd_push, uses_prefect=False)
