"""Shared bench helpers: real prompts (MT-bench from ../shared/data when present), the local server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RLAIF_PROGRESS", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

MT_BENCH = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"


def bench_prompts(n: int):  # noqa: ANN201 - list[PromptRow]
    from flows.prompts import load_prompts

    if MT_BENCH.exists():
        return load_prompts(str(MT_BENCH), column="turns", limit=n).rows
    return load_prompts("default", limit=n).rows


def warm_prefect() -> None:
    """Start Prefect's temporary server once, so flow timings measure the flow, not server boot."""
    from prefect import flow

    @flow(name="rlaif-bench-warmup")
    def warm() -> int:
        return 1

    warm()
