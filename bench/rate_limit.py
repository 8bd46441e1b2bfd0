"""Adaptive concurrency against a rate-limited endpoint: a stub that answers HTTP 429 (`Retry-After`)
whenever more than `--allowed` requests are already in flight, like a hosted API's concurrency limit.

Sends the same N requests with rlaif's client at fixed concurrencies (adaptive off) and with AIMD on,
starting from `--start` (the recipe's `max_concurrency`, far above what the endpoint takes). Prints
requests/s and the share of requests answered 429 for each, and the ratio adaptive / best fixed.
Targets (issue 22): the run finishes, within 10% of the best fixed setting, at most 1% answered 429.
"""

from __future__ import annotations

import argparse
import asyncio
import time

from aiohttp import web

from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint

BODY = {"choices": [{"message": {"content": "ok"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 5, "completion_tokens": 1}}  # fmt: skip


async def serve(allowed: int, latency_s: float, retry_after: str) -> tuple[web.AppRunner, dict[str, int]]:
    seen = {"in_flight": 0, "answered": 0, "limited": 0}

    async def chat(request: web.Request) -> web.Response:
        await request.read()
        if seen["in_flight"] >= allowed:
            seen["limited"] += 1
            return web.json_response({"error": {"message": "rate limited"}}, status=429,
                                     headers={"Retry-After": retry_after})  # fmt: skip
        seen["in_flight"] += 1
        try:
            await asyncio.sleep(latency_s)
        finally:
            seen["in_flight"] -= 1
        seen["answered"] += 1
        return web.json_response(BODY)

    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    runner = web.AppRunner(app, access_log=None)
    await runner.setup()
    await web.TCPSite(runner, "127.0.0.1", 0).start()
    return runner, seen


async def one_setting(
    url: str, seen: dict[str, int], n: int, concurrency: int, adaptive: bool
) -> tuple[float, float, int]:
    for k in ("answered", "limited"):
        seen[k] = 0
    ep = Endpoint(base_url=url, model="stub", max_concurrency=concurrency)
    client = LLMClient([ep], ClientConfig(adaptive=adaptive, backoff_base_s=0.05))
    t0 = time.monotonic()
    await asyncio.gather(
        *(client.chat([{"role": "user", "content": f"q{i}"}], max_tokens=1) for i in range(n))
    )
    wall = time.monotonic() - t0
    settled = client.limits()[url]["settled"]
    await client.aclose()
    return n / wall, seen["limited"] / (seen["answered"] + seen["limited"]), settled


async def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--requests", type=int, default=4000)
    ap.add_argument("--allowed", type=int, default=16, help="requests the stub takes at once")
    ap.add_argument("--start", type=int, default=64, help="max_concurrency the adaptive client starts from")
    ap.add_argument("--latency-ms", type=float, default=50.0)
    ap.add_argument("--retry-after", default="1")
    args = ap.parse_args()
    runner, seen = await serve(args.allowed, args.latency_ms / 1000, args.retry_after)
    port = runner.addresses[0][1]
    url = f"http://127.0.0.1:{port}/v1"
    print(f"# stub: 429 (Retry-After: {args.retry_after}) above {args.allowed} in flight, {args.latency_ms:.0f} ms "
          f"per answer; {args.requests} requests per setting")  # fmt: skip
    fixed = {}
    for c in sorted({args.allowed // 2, args.allowed, args.allowed * 2, args.start}):
        rate, share, _ = await one_setting(url, seen, args.requests, c, adaptive=False)
        fixed[c] = rate
        print(f"fixed concurrency {c:3d}: {rate:7.1f} req/s, answered 429: {share:6.2%}")
    rate, share, settled = await one_setting(url, seen, args.requests, args.start, adaptive=True)
    best = max(fixed.values())
    print(
        f"adaptive from {args.start:3d}: {rate:7.1f} req/s, answered 429: {share:6.2%}, settled at {settled}"
    )
    print(f"adaptive / best fixed = {rate / best:.3f} (target >= 0.90); 429 share {share:.2%} (target <= 1%)")
    await runner.cleanup()


if __name__ == "__main__":
    asyncio.run(main())
