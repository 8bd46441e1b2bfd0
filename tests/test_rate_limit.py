"""A rate-limited endpoint (HTTP 429 above a fixed concurrency, as hosted APIs do) never kills a run:
the client halves the endpoint's concurrency on 429 and grows it back (AIMD), retries a 429 while the
endpoint answers others, and says "rate limited", not "is the endpoint up", when it must give up.
The stub counts what it answered; figures are counts, not timings (bench/rate_limit.py has the rates)."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from pathlib import Path

import pytest

from flows.cli import main
from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint
from serving.errors import EndpointError
from tests.stubs import StubServer, chat_body, status_burst


class Limited:
    """429 (`Retry-After`) whenever `allowed` requests are already in flight; counts both answers."""

    def __init__(self, allowed: int, latency_s: float = 0.02) -> None:
        self.allowed, self.latency_s = allowed, latency_s
        self.lock = threading.Lock()
        self.in_flight = self.most = self.answered = self.limited = 0
        self.server = StubServer(self.reply)

    def reply(self, req: dict, n: int):
        with self.lock:
            if self.in_flight >= self.allowed:
                self.limited += 1
                return 429, {"error": {"message": "rate limited"}}, {"Retry-After": "0.05"}
            self.in_flight += 1
            self.most = max(self.most, self.in_flight)
        time.sleep(self.latency_s)
        with self.lock:
            self.in_flight -= 1
            self.answered += 1
        return 200, chat_body(f"answer to {req['messages'][-1]['content']}"), {}


def test_aimd_finishes_every_request_and_settles_at_what_the_endpoint_takes():
    stub = Limited(allowed=6)
    with stub.server:

        async def go():
            client = LLMClient([Endpoint(base_url=stub.server.base_url, model="stub", max_concurrency=64)],
                               ClientConfig(backoff_base_s=0.01, timeout_s=10))  # fmt: skip
            try:
                res = await asyncio.gather(
                    *(client.chat([{"role": "user", "content": f"q{i}"}], max_tokens=2) for i in range(300))
                )
                return res, client.counters, client.limits()[stub.server.base_url]
            finally:
                await client.aclose()

        res, counters, limits = asyncio.run(go())
    assert len(res) == 300 and stub.answered == 300  # nothing lost, nothing answered twice
    assert counters.rate_limited == stub.limited >= 1  # it met the limit, and counted every 429
    assert stub.limited <= 30  # <= 10% of requests: without AIMD, 64 at once against 6 is ~90%
    assert limits["lowest"] <= 6 and limits["max_concurrency"] == 64


def test_a_429_storm_with_no_answers_gives_up_saying_rate_limited():
    cfg = ClientConfig(max_rate_limited=4, backoff_base_s=0.01, backoff_max_s=0.02, timeout_s=5)
    with status_burst(429, times=10_000) as stub:

        async def go():
            client = LLMClient([Endpoint(base_url=stub.base_url, model="stub")], cfg)
            try:
                await client.chat([{"role": "user", "content": "hi"}], max_tokens=2)
            finally:
                await client.aclose()

        with pytest.raises(EndpointError) as err:
            asyncio.run(go())
    msg = str(err.value)
    assert "rate limited" in msg and "max_concurrency" in msg and "is the endpoint up" not in msg
    assert len(stub.calls) == 4


def test_rlaif_generate_against_a_rate_limited_endpoint_finishes(tmp_path: Path):
    stub = Limited(allowed=4)
    with stub.server:
        prompts = tmp_path / "p.jsonl"
        prompts.write_text("".join(json.dumps({"prompt": f"question {i}?"}) + "\n" for i in range(40)))
        recipe = tmp_path / "r.yaml"
        recipe.write_text(
            f"name: limited\nprompts: {{path: {prompts}}}\n"
            f"policy:\n  endpoints:\n    - {{base_url: {stub.server.base_url}, model: stub, max_concurrency: 64}}\n"
            "sampling: {n: 2, max_tokens: 8}\nclient: {backoff_base_s: 0.01}\n"
        )
        out = tmp_path / "out"
        assert main(["generate", str(recipe), "--out", str(out)]) == 0
    assert stub.answered == 80 and stub.most <= 4  # every sample answered once, never above the limit
    summary = json.loads((out / "summary.json").read_text())
    assert summary["client"]["rate_limited"] == stub.limited >= 1
    limits = summary["client"]["concurrency"][stub.server.base_url]
    assert limits["lowest"] <= 4 and limits["max_concurrency"] == 64
