"""Cost of the UltraFeedback judge on 16 MT-bench prompts x 4 completions: requests per prompt, judge
tokens per labelled pair, and each stage's share of the wall time (generate -> judge -> build).

Run: `.venv/bin/python bench/judge_cost.py [--prompts 16 --n 4]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import MT_BENCH, warm_prefect

from flows.pipeline import run_pipeline
from flows.recipe import parse_recipe


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=96)
    args = ap.parse_args()
    source = {"path": str(MT_BENCH), "column": "turns"} if MT_BENCH.exists() else {"path": "default"}
    recipe = parse_recipe({
        "name": "judge-cost", "prompts": {**source, "limit": args.prompts},
        "sampling": {"n": args.n, "max_tokens": args.max_tokens}, "batch_size": 4,
        "judges": [{"type": "ultrafeedback", "max_tokens": 384}],
    }, "bench")  # fmt: skip
    warm_prefect()
    with tempfile.TemporaryDirectory() as tmp:
        out = Path(tmp) / "run"
        t0 = time.monotonic()
        summary = run_pipeline(recipe, out)
        total = time.monotonic() - t0
        judge_shards = list((out / "judge" / "ultrafeedback").glob("shard-*.json"))
        judge_tokens = 0
        for s in judge_shards:
            d = json.loads(s.read_text())
            judge_tokens += d["prompt_tokens"] + d["completion_tokens"]
    st = summary.stages
    prompts = st["generate"].prompts
    pairs = sum(v for k, v in summary.build.pairs.items() if k.endswith("_prefs"))
    stage_wall = {k: v.wall_s for k, v in st.items()}
    busy = sum(stage_wall.values())
    print(
        f"{prompts} prompts x {args.n} completions; judge: ultrafeedback (4 aspects), {summary.build.judges}"
    )
    print(f"judge requests per prompt: {st['judge'].requests / prompts:.2f}")
    print(f"judge tokens (prompt+completion) per labelled pair: {judge_tokens / max(pairs, 1):.0f} "
          f"({judge_tokens} tokens, {pairs} pairs)")  # fmt: skip
    print("wall-time share per stage: " + ", ".join(f"{k} {v / busy:.2f} ({v:.0f}s)" for k, v in stage_wall.items())
          + f"; whole run incl. server start {total:.0f}s")  # fmt: skip


if __name__ == "__main__":
    main()
