"""Generate against two local vLLM servers vs one: throughput ratio, and a check that the rows are
right (exactly one per (prompt, sample), both servers used). On 2 cores expect little gain.

Run: `.venv/bin/python bench/scale_endpoints.py [--prompts 32 --n 4 --max-tokens 64]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import bench_prompts, warm_prefect
from flows.generate import generate_flow

from flows.recipe import Sampling
from serving.client import ClientConfig, Endpoint
from serving.vllm import VllmServer


def run(endpoints: list[Endpoint], prompts, sampling: Sampling) -> tuple[float, int, set]:  # noqa: ANN001
    with tempfile.TemporaryDirectory() as out:
        t0 = time.monotonic()
        res = generate_flow(prompts=prompts, endpoints=endpoints, model="smollm2-135m-instruct", sampling=sampling,
                            out_dir=out, batch_size=8, client_config=ClientConfig())  # fmt: skip
        wall = time.monotonic() - t0
        rows = [r for s in res.shards for r in json.loads(Path(s).read_text())["rows"]]
    keys = [(r["prompt_id"], r["sample_index"]) for r in rows]
    assert len(keys) == len(set(keys)) == len(prompts) * sampling.n, "rows are wrong"
    return res.new_completion_tokens / wall, len(rows), set(keys)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--prompts", type=int, default=32)
    ap.add_argument("--n", type=int, default=4)
    ap.add_argument("--max-tokens", type=int, default=64)
    args = ap.parse_args()
    prompts = bench_prompts(args.prompts)
    sampling = Sampling(n=args.n, max_tokens=args.max_tokens, seed=0)
    warm_prefect()
    with VllmServer(None, port=8765) as a, VllmServer(None, port=8767) as b:
        ea = Endpoint(base_url=a.base_url, model=a.model_name, max_concurrency=32)
        eb = Endpoint(base_url=b.base_url, model=b.model_name, max_concurrency=32)
        one_tps, one_rows, _ = run([ea], prompts, sampling)
        two_tps, two_rows, _ = run([ea, eb], prompts, sampling)
        served = {}
        for s, name in ((a, "8765"), (b, "8767")):
            import httpx

            text = httpx.get(s.base_url.removesuffix("/v1") + "/metrics").text
            served[name] = sum(float(x.rsplit(" ", 1)[1]) for x in text.splitlines()
                               if x.startswith("vllm:request_success_total{"))  # fmt: skip
    print(f"one server: {one_tps:.1f} tokens/s ({one_rows} rows); two servers: {two_tps:.1f} tokens/s "
          f"({two_rows} rows); requests served per server (lifetime): {served}")  # fmt: skip
    print(f"two/one endpoint throughput ratio: {two_tps / one_tps:.3f}")


if __name__ == "__main__":
    main()
