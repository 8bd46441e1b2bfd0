"""Async client over one or more OpenAI-compatible endpoints (vLLM, OpenAI, any proxy).

Bounded concurrency per endpoint, retries with exponential backoff + jitter on 429/5xx/timeouts/
connection errors (honouring `Retry-After`), requests spread over endpoints (a failing endpoint is
rested for a while), and counters a caller can read. Secrets come only from environment variables.
"""

from __future__ import annotations

import asyncio
import os
import random
import threading
import time
from collections.abc import Awaitable, Callable, Coroutine
from typing import Any, TypeVar

import httpx
from pydantic import BaseModel, ConfigDict, Field

from serving.errors import EndpointError

T = TypeVar("T")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}


class Endpoint(BaseModel):
    """One OpenAI-compatible endpoint. `api_key_env` is the *name* of an environment variable."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. http://127.0.0.1:8765/v1 or https://api.openai.com/v1")
    model: str = Field(description="model name the endpoint serves")
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    max_concurrency: int = Field(default=32, ge=1, description="requests in flight at once")

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if key is None:
            raise EndpointError(
                f"endpoint {self.base_url}: environment variable {self.api_key_env} is not set"
            )
        return key


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=600.0, gt=0, description="per-request timeout (CPU is slow)")
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    rest_after_failures: int = Field(default=5, ge=1, description="consecutive failures to rest")
    rest_s: float = Field(default=30.0, ge=0, description="how long a failing endpoint rests")


class Counters(BaseModel):
    requests: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0

    def tokens_per_s(self) -> float:
        return self.completion_tokens / self.wall_s if self.wall_s else 0.0


class Choice(BaseModel):
    text: str
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # content entries: token, logprob, top_logprobs


class ChatResult(BaseModel):
    choices: list[Choice]
    prompt_tokens: int = 0
    completion_tokens: int = 0
    endpoint: str = ""


class RequestRejected(EndpointError):
    """The endpoint refused this request for good (4xx other than 429/408), e.g. prompt too long."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status


class _EndpointState:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.sem = asyncio.Semaphore(endpoint.max_concurrency)
        self.in_flight = 0
        self.consecutive_failures = 0
        self.rested_until = 0.0


class LLMClient:
    """Chat completions over several endpoints. Create it inside the event loop that uses it."""

    def __init__(self, endpoints: list[Endpoint], config: ClientConfig | None = None) -> None:
        if not endpoints:
            raise EndpointError("no endpoint configured")
        self.config = config or ClientConfig()
        self.states = [_EndpointState(e) for e in endpoints]
        self.counters = Counters()
        self._busy = 0
        self._busy_since = 0.0
        self._http = httpx.AsyncClient(
            timeout=httpx.Timeout(self.config.timeout_s, connect=10.0),
            limits=httpx.Limits(max_connections=sum(e.max_concurrency for e in endpoints) + 8),
        )

    async def aclose(self) -> None:
        await self._http.aclose()

    def _pick(self) -> _EndpointState:
        now = time.monotonic()
        healthy = [s for s in self.states if s.rested_until <= now] or self.states
        return min(healthy, key=lambda s: s.in_flight / s.endpoint.max_concurrency)

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        if retry_after:
            try:
                return min(float(retry_after), self.config.backoff_max_s)
            except ValueError:
                pass
        delay = min(self.config.backoff_base_s * 2**attempt, self.config.backoff_max_s)
        return delay * (0.5 + random.random() / 2)

    def _busy_enter(self) -> None:
        if self._busy == 0:
            self._busy_since = time.monotonic()
        self._busy += 1

    def _busy_exit(self) -> None:
        self._busy -= 1
        if self._busy == 0:
            self.counters.wall_s += time.monotonic() - self._busy_since

    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        extra_body: dict[str, Any] | None = None,
    ) -> ChatResult:
        """One chat completion request (with `n` samples), retried on transient failures."""
        body: dict[str, Any] = {"messages": messages, "n": n}
        for key, value in (
            ("temperature", temperature), ("top_p", top_p), ("max_tokens", max_tokens),
            ("seed", seed), ("response_format", response_format), ("top_logprobs", top_logprobs),
        ):  # fmt: skip
            if value is not None:
                body[key] = value
        if logprobs:
            body["logprobs"] = True
        if extra_body:
            body.update(extra_body)
        last_error = ""
        self._busy_enter()
        try:
            for attempt in range(self.config.max_retries + 1):
                state = self._pick()
                ep = state.endpoint
                url = f"{ep.base_url.rstrip('/')}/chat/completions"
                headers = {"Content-Type": "application/json"}
                key = ep.api_key()
                if key:
                    headers["Authorization"] = f"Bearer {key}"
                retry_after = None
                async with state.sem:
                    state.in_flight += 1
                    self.counters.requests += 1
                    try:
                        resp = await self._http.post(url, json={**body, "model": ep.model},
                                                     headers=headers)  # fmt: skip
                    except (httpx.TimeoutException, httpx.TransportError) as exc:
                        last_error = f"{type(exc).__name__} from {url}"
                        resp = None
                    finally:
                        state.in_flight -= 1
                if resp is not None and resp.status_code == 200:
                    try:
                        result = self._parse(resp.json(), ep.base_url)
                    except (ValueError, KeyError, TypeError) as exc:
                        last_error = f"unparseable response from {url}: {exc}"
                    else:
                        state.consecutive_failures = 0
                        self.counters.prompt_tokens += result.prompt_tokens
                        self.counters.completion_tokens += result.completion_tokens
                        return result
                elif resp is not None:
                    retry_after = resp.headers.get("retry-after")
                    detail = resp.text[:300].replace("\n", " ")
                    last_error = f"HTTP {resp.status_code} from {url}: {detail}"
                    if resp.status_code not in RETRYABLE_STATUS:
                        self.counters.failures += 1
                        raise RequestRejected(last_error, resp.status_code)
                self.counters.failures += 1
                state.consecutive_failures += 1
                if state.consecutive_failures >= self.config.rest_after_failures and len(self.states) > 1:
                    state.rested_until = time.monotonic() + self.config.rest_s
                    state.consecutive_failures = 0
                if attempt < self.config.max_retries:
                    self.counters.retries += 1
                    await asyncio.sleep(self._backoff(attempt, retry_after))
            raise EndpointError(
                f"gave up after {self.config.max_retries + 1} attempts: {last_error} "
                "(is the endpoint up? check base_url/model in the recipe)"
            )
        finally:
            self._busy_exit()

    @staticmethod
    def _parse(data: dict[str, Any], base_url: str) -> ChatResult:
        choices = []
        for c in data["choices"]:
            lp = c.get("logprobs") or {}
            choices.append(
                Choice(
                    text=c["message"].get("content") or "",
                    finish_reason=c.get("finish_reason"),
                    logprobs=lp.get("content") if isinstance(lp, dict) else None,
                )
            )
        usage = data.get("usage") or {}
        return ChatResult(
            choices=choices,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            endpoint=base_url,
        )


class LoopThread:
    """A background event loop so synchronous code (Prefect tasks in threads) shares one client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="rlaif-io")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_LOOP: LoopThread | None = None
_CLIENTS: dict[str, LLMClient] = {}
_LOCK = threading.Lock()


def io_loop() -> LoopThread:
    global _LOOP
    with _LOCK:
        if _LOOP is None:
            _LOOP = LoopThread()
        return _LOOP


def shared_client(endpoints: list[Endpoint], config: ClientConfig | None = None) -> LLMClient:
    """One client per endpoint set per process, living on the shared background loop."""
    key = "|".join(e.model_dump_json() for e in endpoints) + (config or ClientConfig()).model_dump_json()
    loop = io_loop()
    with _LOCK:
        if key not in _CLIENTS:

            async def make() -> LLMClient:
                return LLMClient(endpoints, config)

            _CLIENTS[key] = asyncio.run_coroutine_threadsafe(make(), loop.loop).result()
        return _CLIENTS[key]


def total_counters() -> Counters:
    """Counters summed over every client of this process (for run summaries)."""
    total = Counters()
    with _LOCK:
        clients = list(_CLIENTS.values())
    for c in clients:
        for field in ("requests", "failures", "retries", "prompt_tokens", "completion_tokens", "wall_s"):
            setattr(total, field, getattr(total, field) + getattr(c.counters, field))
    return total


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine factory on the shared loop from synchronous code."""

    async def wrap() -> T:
        return await fn()

    return io_loop().run(wrap())
