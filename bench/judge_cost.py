"""What the feedback costs next to generation, in tokens, from one real `rlaif run` on the local vLLM.

Writes a recipe into a temp folder (the demo's settings: MT-bench prompts when ../shared/data has them,
n completions of 96 tokens, UltraFeedback + pairwise judges, constitution critique; no gate, no
training), starts a fresh vLLM server of the bundled model (an empty prefix cache), runs the real CLI
and reads the run's summary.json: `usage` per stage and judge (requests, prompt tokens, prefix-cache
hits, completion tokens). Stages stream and overlap, so their wall times say nothing about cost; every
figure printed is a token count or a ratio of two counts from this one run:

- per stage/judge: requests and tokens per prompt, share of all tokens, share of the tokens the server
  computed (prompt tokens not found in its prefix cache + completion tokens);
- judges' tokens / generation's tokens, pairwise / UltraFeedback tokens per prompt, critique /
  generation, judge tokens per judge-labelled pair.

Run: `.venv/bin/python bench/judge_cost.py [--prompts 16 --n 4 --port 8791]` (9 min on the 2-core
CPU under a 1-minute load of ~15; the server's start is 2 of them). `--compare all,auto`: the pairwise
judge comparing every pair, then only the pairs binarization emits, each on a fresh server, and the
ratio of judge tokens per labelled pair.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MT_BENCH, ROOT, LoadSampler, fresh_server, loadavg


def recipe_text(port: int, prompts: int, n: int, compare: str = "auto") -> str:
    source = f"{{path: {MT_BENCH}, column: turns" if MT_BENCH.exists() else "{path: default"
    return f"""name: judge-cost
prompts: {source}, limit: {prompts}}}
policy: {{port: {port}, max_concurrency: 32}}
sampling: {{n: {n}, max_tokens: 96, temperature: 0.8, top_p: 1.0, seed: 0}}
judges:
  - {{type: ultrafeedback, max_tokens: 512}}
  - {{type: pairwise, max_tokens: 64, compare: {compare}}}
critique: {{constitution: {ROOT / "constitutions" / "harmless.yaml"}, mode: critique, max_tokens: 96}}
"""


def total(u: dict) -> int:
    return u["prompt_tokens"] + u["completion_tokens"]


def computed(u: dict) -> int:
    """Tokens the server had to compute: prompt tokens not answered from its prefix cache + completion."""
    return u["prompt_tokens"] - u["cached_prompt_tokens"] + u["completion_tokens"]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=16)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument(
        "--port",
        type=int,
        default=8791,
        help="a port nothing else uses (tests take 8765-8767): the bench starts its own server",
    )
    ap.add_argument("--compare", default="auto",
                    help="the pairwise judge's `compare`; `all,auto` runs both (a fresh server each) and prints "
                    "judge tokens per labelled pair and the prefix-cache hit rate of each, and their ratio")  # fmt: skip
    args = ap.parse_args()
    runs = {c: one_run(args, c) for c in args.compare.split(",")}
    if len(runs) == 2:
        (a, fa), (b, fb) = runs.items()
        print(f"compare {b} vs {a}: judge tokens per labelled pair {fb['per_pair']:,.0f} vs {fa['per_pair']:,.0f} "
              f"({fb['per_pair'] / fa['per_pair'] - 1:+.0%}); prefix cache hit, all stages {fb['cached']:.0%} vs "
              f"{fa['cached']:.0%}; pairwise alone {fb['cached_pw']:.0%} vs {fa['cached_pw']:.0%}; labelled pairs "
              f"{fb['pairs']} vs {fa['pairs']}")  # fmt: skip


def one_run(args: argparse.Namespace, compare: str) -> dict[str, float]:
    print(f"before: {loadavg()}")
    with tempfile.TemporaryDirectory() as tmp:
        recipe, out = Path(tmp) / "judge-cost.yaml", Path(tmp) / "out"
        recipe.write_text(recipe_text(args.port, args.prompts, args.n, compare))
        with fresh_server(args.port), LoadSampler() as load:
            t0 = time.monotonic()
            subprocess.run([sys.executable, "-m", "flows.cli", "run", str(recipe), "--out", str(out)],
                           check=True, cwd=ROOT, env={**os.environ, "RLAIF_PROGRESS": "0"})  # fmt: skip
            run_s = time.monotonic() - t0
        summary = json.loads((out / "summary.json").read_text())
    usage: dict[str, dict] = summary["usage"]
    prompts = summary["stages"]["generate"]["prompts"]
    judge_pairs = summary["build"]["stats"]["pairs"]
    all_tokens = sum(total(u) for u in usage.values())
    all_computed = sum(computed(u) for u in usage.values())
    src = "MT-bench" if MT_BENCH.exists() else "bundled"
    print(f"{prompts} {src} prompts x {args.n} completions (max_tokens 96), judges ultrafeedback + pairwise, "
          f"critique (harmless); one run on a fresh server: {run_s:.0f}s, {load.line()}")  # fmt: skip
    print(f"{'stage/judge':<22}{'requests':>9}{'req/prompt':>11}{'prompt tok':>12}{'cached':>7}"
          f"{'completion':>11}{'tok/prompt':>11}{'share':>7}{'computed share':>16}")  # fmt: skip
    for key, u in usage.items():
        reqs = u["requests"] + u["replayed"]
        cached = u["cached_prompt_tokens"] / u["prompt_tokens"] if u["prompt_tokens"] else 0.0
        print(f"{key:<22}{reqs:>9,}{reqs / prompts:>11.2f}{u['prompt_tokens']:>12,}{cached:>7.0%}"
              f"{u['completion_tokens']:>11,}{total(u) / prompts:>11,.0f}{total(u) / all_tokens:>7.2f}"
              f"{computed(u) / all_computed:>16.2f}")  # fmt: skip
    gen = usage["generate"]
    judges = [u for k, u in usage.items() if k.startswith("judge:")]
    judge_tokens, judge_computed = sum(map(total, judges)), sum(map(computed, judges))
    print(f"judge tokens / generation tokens: {judge_tokens / total(gen):.1f} "
          f"(computed by the server: {judge_computed / computed(gen):.1f})")  # fmt: skip
    if "judge:pairwise" in usage and "judge:ultrafeedback" in usage:
        pw, uf = usage["judge:pairwise"], usage["judge:ultrafeedback"]
        print(f"pairwise / ultrafeedback tokens per prompt: {total(pw) / total(uf):.2f} "
              f"(computed: {computed(pw) / computed(uf):.2f}; requests {pw['requests'] + pw['replayed']} "
              f"vs {uf['requests'] + uf['replayed']})")  # fmt: skip
    if "critique" in usage:
        crit = usage["critique"]
        print(f"critique tokens / generation tokens: {total(crit) / total(gen):.1f} "
              f"(computed: {computed(crit) / computed(gen):.1f})")  # fmt: skip
    print(f"judge tokens per judge-labelled pair: {judge_tokens / max(judge_pairs, 1):,.0f} "
          f"({judge_tokens:,} tokens / {judge_pairs} pairs; "
          f"{summary['build']['constitution_pairs']} more pairs from the constitution)")  # fmt: skip
    print(f"after: {loadavg()}")
    prompt_tokens = sum(u["prompt_tokens"] for u in usage.values())
    pw = usage.get("judge:pairwise", {"prompt_tokens": 0, "cached_prompt_tokens": 0})
    return {
        "per_pair": judge_tokens / max(judge_pairs, 1), "pairs": judge_pairs,
        "cached": sum(u["cached_prompt_tokens"] for u in usage.values()) / max(prompt_tokens, 1),
        "cached_pw": pw["cached_prompt_tokens"] / max(pw["prompt_tokens"], 1),
    }  # fmt: skip


if __name__ == "__main__":
    main()
