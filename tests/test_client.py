"""The OpenAI-compatible client: retries, backoff, error messages (fault injection by stubs)."""

from __future__ import annotations

import asyncio
import socket

import pytest

from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint
from serving.errors import EndpointError
from tests.stubs import status_burst

FAST = ClientConfig(max_retries=3, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5)


def _chat(base_url: str, cfg: ClientConfig = FAST):
    async def go():
        client = LLMClient([Endpoint(base_url=base_url, model="stub")], cfg)
        try:
            res = await client.chat([{"role": "user", "content": "hi"}], max_tokens=4)
            return res, client.counters
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_429_twice_then_success_is_retried():
    with status_burst(429, times=2, text="hello") as stub:
        res, counters = _chat(stub.base_url)
    assert res.choices[0].text == "hello"
    assert counters.retries == 2
    assert counters.failures == 2
    assert counters.requests == 3
    assert len(stub.calls) == 3


def test_500_storm_gives_clear_error_after_budget():
    with status_burst(500, times=10_000) as stub:
        with pytest.raises(EndpointError) as err:
            _chat(stub.base_url)
    msg = str(err.value)
    assert "gave up after 4 attempts" in msg
    assert "HTTP 500" in msg and stub.base_url in msg
    assert len(stub.calls) == 4


def test_closed_port_names_the_url():
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    url = f"http://127.0.0.1:{port}/v1"
    with pytest.raises(EndpointError) as err:
        _chat(url, ClientConfig(max_retries=1, backoff_base_s=0.01, timeout_s=2))
    assert url in str(err.value)


def test_400_is_not_retried():
    with status_burst(400, times=10) as stub:
        with pytest.raises(EndpointError) as err:
            _chat(stub.base_url)
    assert "HTTP 400" in str(err.value)
    assert len(stub.calls) == 1


def test_requests_spread_over_endpoints():
    with status_burst(200, 0, "a") as s1, status_burst(200, 0, "b") as s2:

        async def go():
            eps = [Endpoint(base_url=s.base_url, model="stub", max_concurrency=2) for s in (s1, s2)]
            client = LLMClient(eps, FAST)
            await asyncio.gather(*(client.chat([{"role": "user", "content": "x"}]) for _ in range(8)))
            await client.aclose()

        asyncio.run(go())
    assert len(s1.calls) > 0 and len(s2.calls) > 0
    assert len(s1.calls) + len(s2.calls) == 8


def test_failing_endpoint_is_rested():
    with status_burst(503, 10_000) as bad, status_burst(200, 0, "ok") as good:

        async def go():
            eps = [
                Endpoint(base_url=u, model="stub", max_concurrency=1) for u in (bad.base_url, good.base_url)
            ]
            cfg = ClientConfig(max_retries=8, backoff_base_s=0.0, rest_after_failures=2, rest_s=60)
            client = LLMClient(eps, cfg)
            for _ in range(6):
                await client.chat([{"role": "user", "content": "x"}])
            await client.aclose()

        asyncio.run(go())
    assert len(bad.calls) <= 2
    assert len(good.calls) == 6


def test_api_key_comes_from_env_and_never_from_config(monkeypatch):
    monkeypatch.setenv("RLAIF_TEST_KEY", "sk-secret")
    with status_burst(200, 0, "ok") as stub:
        ep = Endpoint(base_url=stub.base_url, model="stub", api_key_env="RLAIF_TEST_KEY")
        assert "sk-secret" not in ep.model_dump_json()

        async def go():
            client = LLMClient([ep], FAST)
            await client.chat([{"role": "user", "content": "x"}])
            await client.aclose()

        asyncio.run(go())
        assert stub.headers[0]["Authorization"] == "Bearer sk-secret"  # sent, read from the environment
    monkeypatch.delenv("RLAIF_TEST_KEY")
    with pytest.raises(EndpointError, match="RLAIF_TEST_KEY is not set"):
        ep.api_key()


def test_waiting_requests_start_by_priority_then_arrival():
    """With one slot, a later request of a lower priority number overtakes earlier waiting ones."""
    with status_burst(200, 0, "ok") as stub:

        async def go():
            client = LLMClient([Endpoint(base_url=stub.base_url, model="stub", max_concurrency=1)], FAST)

            async def send(text: str, priority: int) -> None:
                await client.chat([{"role": "user", "content": text}], priority=priority)

            tasks = [asyncio.create_task(send("first", 5))]
            await asyncio.sleep(0)  # "first" holds the only slot; the rest queue behind it
            tasks += [asyncio.create_task(send(f"low{i}", 5)) for i in range(3)]
            tasks += [asyncio.create_task(send("high", 0))]
            await asyncio.gather(*tasks)
            await client.aclose()

        asyncio.run(go())
    order = [c["messages"][0]["content"] for c in stub.calls]
    assert order == ["first", "high", "low0", "low1", "low2"]
    assert all("priority" not in c for c in stub.calls)  # client-side only: never sent
