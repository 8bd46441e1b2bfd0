"""rlaif's streaming engine vs a raw async client on the real local vLLM server.

32 MT-bench prompts x 4 completions, UltraFeedback + pairwise judges + constitution critique. The raw
client is what a competent script over the OpenAI API would do: generate everything, then send every
judge request and every critique (-> revision) chain together, one `asyncio.gather`, at the same
concurrency (one barrier, after generation: critique needs only the completions, not the judges).
It sends the same requests (same request builders, same seeds, so the same completions up to the
server's batch numerics). Each side gets a freshly started server (the bench refuses a port where one
already answers), so neither finds the other's prompts in the prefix cache.
Prints `run/raw ratio` = rlaif's request span (engine seconds in summary.json) / the raw client's
span: 1.00 is parity, below it the streaming engine is faster. The tokens each side made the server
compute are printed too: equal work is what makes the ratio mean something. So is the load on the
machine during each side: other work on the 2 cores slows whichever side it overlaps.

Run: `.venv/bin/python bench/pipeline_vs_raw.py [--prompts 32 --n 4 --port 8792 --top-p 1.0]`
(8-15 min on an idle 2-core CPU, 28 min under a 1-minute load of 5-10).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from common import MT_BENCH, ROOT, LoadSampler, bench_prompts, fresh_server, loadavg

from flows.engine.stages import generate
from flows.recipe import Sampling
from judges.registry import make_judge, parse_judge_config
from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint

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
    """Generation, then every judge and critique request together: one barrier, as a script would."""
    client = LLMClient([ep], ClientConfig())
    sampling = Sampling(n=n, max_tokens=96, temperature=0.8, top_p=top_p, seed=0)  # as rlaif's recipe
    judges = [make_judge(parse_judge_config({"type": "ultrafeedback", "max_tokens": 512}), client),
              make_judge(parse_judge_config({"type": "pairwise", "max_tokens": 64}), client)]  # fmt: skip
    critic = make_judge(parse_judge_config({"type": "constitution", "max_tokens": 96,
                                            "constitution": str(ROOT / "constitutions" / "harmless.yaml")}), client)  # fmt: skip
    t0 = time.monotonic()
    gens = await asyncio.gather(*(generate(client, p, ep.model, sampling) for p in prompts))
    ok = [(p, comps) for p, (comps, reason) in zip(prompts, gens) if reason is None]
    jobs = [j.judge(p, comps) for p, comps in ok for j in judges]
    jobs += [critic.judge(p, comps) for p, comps in ok]  # critique -> revision needs only the completions
    await asyncio.gather(*jobs)
    span = time.monotonic() - t0
    c = client.counters
    await client.aclose()
    return span, c.requests, c.prompt_tokens - c.cached_prompt_tokens, c.completion_tokens


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument(
        "--port",
        type=int,
        default=8767,
        help="a free port (not the tests' 8765): the bench starts its own servers",
    )
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
        print(f"before: {loadavg()}")
        with fresh_server(args.port), LoadSampler() as run_load:  # started for this side only
            subprocess.run(env_cmd, check=True, cwd=ROOT, env={**os.environ, "RLAIF_PROGRESS": "0"})
        summary = json.loads((out / "summary.json").read_text())
        eng = summary["engine"]
        usage = summary["usage"].values()
        run_new = sum(u["new_prompt_tokens"] - u["new_cached_prompt_tokens"] for u in usage)
        run_out = sum(u["new_completion_tokens"] for u in usage)
        with fresh_server(args.port) as server, LoadSampler() as raw_load:  # an empty prefix cache
            ep = Endpoint(base_url=server.base_url, model=server.model_name, max_concurrency=CONC)
            raw_span, raw_requests, raw_new, raw_out = asyncio.run(raw(ep, prompts, args.n, args.top_p))
    print(f"rlaif run: {eng['requests']} requests, request span {eng['engine_s']:.1f}s "
          f"(first judged record after {eng['first_judged_s']:.1f}s); {run_load.line()}")  # fmt: skip
    print(f"raw client, generation then judges + critique together at concurrency {CONC}: {raw_requests} "
          f"requests in {raw_span:.1f}s; {raw_load.line()}")  # fmt: skip
    print(f"generation top_p {args.top_p} on both sides")
    print(
        f"tokens the server computed: rlaif {run_new:,} uncached prompt + {run_out:,} completion; "
        f"raw {raw_new:,} + {raw_out:,}"
    )
    print(f"run/raw ratio: {eng['engine_s'] / raw_span:.3f}")
    print(f"run/raw ratio per completion token: {(eng['engine_s'] / run_out) / (raw_span / raw_out):.3f}")


if __name__ == "__main__":
    main()
