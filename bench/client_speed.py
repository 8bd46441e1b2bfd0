"""Client overhead: requests/s and client CPU per request of our LLMClient (aiohttp) vs
`openai.AsyncOpenAI` (its default httpx transport, and its aiohttp one) vs LLMClient over httpx
(its previous transport), against the fast stub (bench/stub_server.py, a separate process).

The stub answers after a fixed latency, so every client could reach concurrency / latency requests/s;
what separates them is the client's own CPU per request (process CPU time of this process / requests).

    python bench/client_speed.py [--requests 8000] [--clients ours,openai,openai-aiohttp,ours-httpx] [--profile ours]
"""

from __future__ import annotations

import argparse
import asyncio
import cProfile
import functools
import pstats
import time
from collections.abc import Awaitable, Callable
from typing import Any

import common  # noqa: F401 - puts the repository root on sys.path
import httpx
from stub_server import start_stub

from judges.ultrafeedback import rating_schema
from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint

SCHEMA = rating_schema(4)  # the UltraFeedback judge's own response_format for 4 answers
ANSWER = "The capital of France is Paris, a city on the Seine known for its museums and history. "
MESSAGES = [
    {"role": "system", "content": "You are a careful judge. Rate each answer for helpfulness from 1 to 5."},
    {
        "role": "user",
        "content": "Question: what is the capital of France?\n\n"
        + "\n\n".join(f"Answer {i + 1}: {ANSWER * 5}" for i in range(4))
        + "\n\nGive a rating and a short rationale for each answer, in order.",
    },
]
KW: dict[str, Any] = {"temperature": 0.0, "max_tokens": 256, "response_format": SCHEMA}

Send = Callable[[], Awaitable[str]]


def make_ours(base_url: str, conc: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    client = LLMClient([Endpoint(base_url=base_url, model="stub", max_concurrency=conc)], ClientConfig())

    async def send() -> str:
        return (await client.chat(MESSAGES, **KW)).choices[0].text

    return send, client.aclose


def make_openai(
    base_url: str, conc: int, aiohttp: bool = False
) -> tuple[Send, Callable[[], Awaitable[None]]]:
    """`openai.AsyncOpenAI` on its default httpx transport, or on its aiohttp one."""
    from openai import AsyncOpenAI, DefaultAioHttpClient

    extra = {"http_client": DefaultAioHttpClient()} if aiohttp else {}
    client = AsyncOpenAI(base_url=base_url, api_key="none", max_retries=5, timeout=600.0, **extra)
    sem = asyncio.Semaphore(conc)

    async def send() -> str:
        async with sem:
            resp = await client.chat.completions.create(model="stub", messages=MESSAGES, **KW)  # type: ignore[arg-type]
        assert resp.usage is not None and resp.choices[0].finish_reason
        return resp.choices[0].message.content or ""

    return send, client.close


class _HttpxResponse:
    """The bits of an aiohttp response that LLMClient reads."""

    def __init__(self, http: httpx.AsyncClient, url: Any, data: bytes, headers: dict[str, str]) -> None:
        self.args = (str(url), data, headers)
        self.http = http

    async def __aenter__(self) -> _HttpxResponse:
        import aiohttp

        try:
            r = await self.http.post(self.args[0], content=self.args[1], headers=self.args[2])
        except httpx.TransportError as exc:
            raise aiohttp.ClientConnectionError(type(exc).__name__) from exc
        self.status, self.headers, self.body = r.status_code, r.headers, r.content
        return self

    async def __aexit__(self, *exc: object) -> None:
        pass

    async def read(self) -> bytes:
        return self.body


class HttpxSession:
    """Stands in for LLMClient's aiohttp session: same calls, httpx (the previous transport) underneath."""

    def __init__(self, limit: int, timeout_s: float) -> None:
        self.http = httpx.AsyncClient(
            timeout=httpx.Timeout(timeout_s, connect=10.0), limits=httpx.Limits(max_connections=limit)
        )
        self.closed = False

    def post(self, url: Any, data: bytes, headers: dict[str, str], **_: Any) -> _HttpxResponse:
        return _HttpxResponse(self.http, url, data, headers)

    async def close(self) -> None:
        self.closed = True
        await self.http.aclose()


def make_httpx(base_url: str, conc: int) -> tuple[Send, Callable[[], Awaitable[None]]]:
    client = LLMClient([Endpoint(base_url=base_url, model="stub", max_concurrency=conc)], ClientConfig())
    for state in client.states:
        state.target = state.url  # type: ignore[assignment]  # what LLMClient._session() would parse
    client._http = HttpxSession(conc + 8, client.config.timeout_s)  # type: ignore[assignment]

    async def send() -> str:
        return (await client.chat(MESSAGES, **KW)).choices[0].text

    return send, client.aclose


CLIENTS = {
    "ours": make_ours,
    "openai": make_openai,
    "openai-aiohttp": functools.partial(make_openai, aiohttp=True),
    "ours-httpx": make_httpx,
}


async def drive(send: Send, n: int, workers: int, max_s: float = float("inf")) -> int:
    """`workers` callers keep asking (more than the concurrency, as a shard streaming requests does)
    until `n` requests are answered or `max_s` seconds have passed; returns how many were answered."""
    left, done, deadline = n, 0, time.perf_counter() + max_s

    async def worker() -> None:
        nonlocal left, done
        while left > 0 and time.perf_counter() < deadline:
            left -= 1
            text = await send()
            assert text.startswith("{"), text[:80]
            done += 1

    await asyncio.gather(*(worker() for _ in range(workers)))
    return done


async def measure(name: str, base_url: str, args: argparse.Namespace) -> dict[str, float]:
    send, close = CLIENTS[name](base_url, args.concurrency)
    try:
        await drive(send, args.warmup, args.workers)
        prof = cProfile.Profile() if args.profile == name else None
        c0, t0 = time.process_time(), time.perf_counter()
        if prof:
            prof.enable()
        done = await drive(send, args.requests, args.workers, args.max_s)
        if prof:
            prof.disable()
        wall, cpu = time.perf_counter() - t0, time.process_time() - c0
    finally:
        await close()
    if prof:
        pstats.Stats(prof).sort_stats("tottime").print_stats(25)
    return {"rps": done / wall, "cpu_ms": 1000 * cpu / done, "wall": wall, "done": done}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--requests", type=int, default=8000)
    ap.add_argument("--warmup", type=int, default=500)
    ap.add_argument("--concurrency", type=int, default=64)
    ap.add_argument("--workers", type=int, default=128, help="callers (the client caps in-flight requests)")
    ap.add_argument("--max-s", type=float, default=12.0, help="stop a slow client's timed run after this")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--clients", default=",".join(CLIENTS))
    ap.add_argument("--profile", default=None, help="cProfile this client's timed run")
    args = ap.parse_args()
    stub = start_stub(0, args.latency_ms)
    try:
        ceiling = args.concurrency / (args.latency_ms / 1000)
        print(f"stub {stub.base_url}: latency {args.latency_ms:g} ms, concurrency {args.concurrency}, "  # type: ignore[attr-defined]
              f"ceiling {ceiling:.0f} req/s, {args.requests} requests per client (at most {args.max_s:g} s)")  # fmt: skip
        res = {}
        for name in args.clients.split(","):
            r = res[name] = asyncio.run(measure(name, stub.base_url, args))  # type: ignore[attr-defined]
            print(f"{name:15s} {r['rps']:6.0f} req/s  {r['cpu_ms']:6.3f} CPU ms/request  "
                  f"({r['done']:.0f} requests in {r['wall']:.1f} s)")  # fmt: skip
        if "ours" in res and "openai" in res:
            print(f"openai/ours (req/s): {res['openai']['rps'] / res['ours']['rps']:.2f}")
        for other in ("openai-aiohttp", "ours-httpx"):
            if "ours" in res and other in res:
                print(f"{other}/ours (req/s): {res[other]['rps'] / res['ours']['rps']:.2f}")
    finally:
        stub.terminate()
        stub.wait()


if __name__ == "__main__":
    main()
