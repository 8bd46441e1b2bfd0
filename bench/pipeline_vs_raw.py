"""rlaif's streaming engine vs a raw async client on the real local vLLM server.

32 MT-bench prompts x 4 completions, UltraFeedback + pairwise judges + constitution critique. The raw
client sends the same requests (same request builders, same seeds, so the same completions up to the
server's batch numerics) stage by stage at the same concurrency, waiting for each stage to finish.
Each side gets a freshly started server, so neither finds the other's prompts in the prefix cache.
Prints `run/raw ratio` = rlaif's request span (engine seconds in summary.json) / the raw client's
span; below 1.00 the streaming stages beat the barriers. The tokens each side made the server compute
are printed too: equal work is what makes the ratio mean something.

Run: `.venv/bin/python bench/pipeline_vs_raw.py [--prompts 32 --n 4 --port 8765 --top-p 1.0]`
(about 15 min on the 2-core CPU).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MT_BENCH, ROOT, bench_prompts

from flows.engine.stages import PromptCritic, generate
from flows.recipe import CritiqueSpec, Sampling
from judges.constitution import load_constitution
from judges.registry import make_judge, parse_judge_config
from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint
from serving.vllm import VllmServer

CONC = 32


def recipe_text(data: str, port: int, n: int, top_p: float) -> str:
    return f"""name: pipeline-vs-raw
prompts: {{path: {data}, column: turns}}
policy: {{port: {port}, max_concurrency: {CONC}}}
sampling: {{n: {n}, max_tokens: 96, temperature: 0.8, top_p: {top_p}, seed: 0}}
judges:
  - {{type: ultrafeedback, max_tokens: 512}}
  - {{type: pairwise, max_tokens: 64}}
critique: {{constitution: {ROOT / "constitutions" / "harmless.yaml"}, mode: critique, max_tokens: 96}}
"""


async def raw(ep: Endpoint, prompts: list, n: int, top_p: float) -> tuple[float, int, int, int]:
    """Stage by stage with barriers, as a script over the OpenAI API would do it."""
    client = LLMClient([ep], ClientConfig())
    sampling = Sampling(n=n, max_tokens=96, temperature=0.8, top_p=top_p, seed=0)  # as rlaif's recipe
    judges = [make_judge(parse_judge_config({"type": "ultrafeedback", "max_tokens": 512}), client),
              make_judge(parse_judge_config({"type": "pairwise", "max_tokens": 64}), client)]  # fmt: skip
    critic = PromptCritic(CritiqueSpec(constitution="harmless", max_tokens=96),
                          load_constitution(ROOT / "constitutions" / "harmless.yaml"), client)  # fmt: skip
    t0 = time.monotonic()
    gens = await asyncio.gather(*(generate(client, p, ep.model, sampling) for p in prompts))
    ok = [(p, comps) for p, (comps, reason) in zip(prompts, gens) if reason is None]
    await asyncio.gather(*(j.judge(p.prompt_id, p.prompt, [c["response"] for c in comps], p.messages)
                           for p, comps in ok for j in judges))  # fmt: skip
    await asyncio.gather(*(critic.run(p, comps) for p, comps in ok))
    span = time.monotonic() - t0
    c = client.counters
    await client.aclose()
    return span, c.requests, c.prompt_tokens - c.cached_prompt_tokens, c.completion_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--port", type=int, default=8765)
    ap.add_argument("--top-p", type=float, default=1.0, help="generation top_p for both sides")
    args = ap.parse_args()
    prompts = bench_prompts(args.prompts)
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp) / "prompts.jsonl"
        src = MT_BENCH if MT_BENCH.exists() else None
        lines = src.read_text().splitlines()[: args.prompts] if src else [
            json.dumps({"turns": [p.prompt]}) for p in prompts]  # fmt: skip
        data.write_text("\n".join(lines) + "\n")
        recipe = Path(tmp) / "r.yaml"
        recipe.write_text(recipe_text(str(data), args.port, args.n, args.top_p))
        out = Path(tmp) / "out"
        env_cmd = [sys.executable, "-m", "flows.cli", "run", str(recipe), "--out", str(out)]
        with VllmServer(None, port=args.port):  # started for this side only
            subprocess.run(
                env_cmd, check=True, cwd=ROOT, env={"RLAIF_PROGRESS": "0", **dict(__import__("os").environ)}
            )
        summary = json.loads((out / "summary.json").read_text())
        eng = summary["engine"]
        usage = summary["usage"].values()
        run_new = sum(u["new_prompt_tokens"] - u["new_cached_prompt_tokens"] for u in usage)
        run_out = sum(u["new_completion_tokens"] for u in usage)
        with VllmServer(None, port=args.port) as server:  # a fresh server: an empty prefix cache
            ep = Endpoint(base_url=server.base_url, model=server.model_name, max_concurrency=CONC)
            raw_span, raw_requests, raw_new, raw_out = asyncio.run(raw(ep, prompts, args.n, args.top_p))
    print(f"rlaif run: {eng['requests']} requests, request span {eng['engine_s']:.1f}s "
          f"(first judged record after {eng['first_judged_s']:.1f}s)")  # fmt: skip
    print(f"raw client, stage by stage at concurrency {CONC}: {raw_requests} requests in {raw_span:.1f}s "
          f"(generation top_p {args.top_p} on both sides)")  # fmt: skip
    print(
        f"tokens the server computed: rlaif {run_new:,} uncached prompt + {run_out:,} completion; "
        f"raw {raw_new:,} + {raw_out:,}"
    )
    print(f"run/raw ratio: {eng['engine_s'] / raw_span:.3f}")
    print(f"run/raw ratio per completion token: {(eng['engine_s'] / run_out) / (raw_span / raw_out):.3f}")


if __name__ == "__main__":
    main()
