"""Generate flow vs the bare async client on one vLLM server: same 32 prompts x 4 completions.

Prints `generate/raw throughput ratio: X` (completion tokens/s through the flow over the bare client
at concurrency 32). Run: `.venv/bin/python bench/generate_throughput.py [--prompts 32 --n 4]`.
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import time

from common import bench_prompts, warm_prefect
from flows.generate import generate_flow, sample_seed

from flows.recipe import Sampling
from serving.client import ClientConfig, Endpoint, LLMClient
from serving.vllm import VllmServer


async def raw(endpoint: Endpoint, prompts, sampling: Sampling) -> tuple[int, float]:  # noqa: ANN001
    client = LLMClient([endpoint], ClientConfig())
    t0 = time.monotonic()
    res = await asyncio.gather(*(
        client.chat(p.messages, temperature=sampling.temperature, top_p=sampling.top_p,
                    max_tokens=sampling.max_tokens, seed=sample_seed(sampling.seed, p.prompt_id, i))
        for p in prompts for i in range(sampling.n)
    ))  # fmt: skip
    wall = time.monotonic() - t0
    await client.aclose()
    return sum(r.completion_tokens for r in res), wall


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=128)
    ap.add_argument("--port", type=int, default=8765)
    args = ap.parse_args()
    prompts = bench_prompts(args.prompts)
    sampling = Sampling(n=args.n, max_tokens=args.max_tokens, temperature=0.8, seed=0)
    with VllmServer(None, port=args.port) as server:
        ep = Endpoint(base_url=server.base_url, model=server.model_name, max_concurrency=32)
        asyncio.run(raw(ep, prompts[:4], Sampling(n=1, max_tokens=8)))  # warm the server
        warm_prefect()
        with tempfile.TemporaryDirectory() as out:
            t0 = time.monotonic()
            res = generate_flow(prompts=prompts, endpoints=[ep], model=server.model_name, sampling=sampling,
                                out_dir=out, batch_size=8, client_config=ClientConfig())  # fmt: skip
            flow_wall = time.monotonic() - t0
        flow_tps = res.new_completion_tokens / flow_wall
        raw_tokens, raw_wall = asyncio.run(raw(ep, prompts, sampling))
        raw_tps = raw_tokens / raw_wall
    print(f"prompts {len(prompts)} x {args.n} completions, max_tokens {args.max_tokens}")
    print(f"raw client (concurrency 32): {raw_tokens} tokens in {raw_wall:.1f}s = {raw_tps:.1f} tokens/s")
    print(f"generate flow (Prefect, batch 8): {res.new_completion_tokens} tokens in {flow_wall:.1f}s "
          f"= {flow_tps:.1f} tokens/s ({res.rows} rows)")  # fmt: skip
    print(f"generate/raw throughput ratio: {flow_tps / raw_tps:.3f}")


if __name__ == "__main__":
    main()
