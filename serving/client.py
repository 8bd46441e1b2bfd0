"""Async client over one or more OpenAI-compatible endpoints (vLLM, OpenAI, any proxy).

Bounded concurrency per endpoint, adapted AIMD-style to what the endpoint takes (halved on HTTP 429,
one slot added back per window of answers, never above `max_concurrency`), retries with exponential
backoff + jitter on 429/5xx/timeouts/connection errors (honouring `Retry-After`; a 429 is retried for as
long as the endpoint keeps answering other requests), requests spread over endpoints (a failing endpoint
is rested for a while), and counters a caller can read. Secrets come only from environment variables.

The transport is aiohttp: against a fast server it costs ~10x less CPU per request than httpx (and
than `openai.AsyncOpenAI`, which is built on httpx), measured by `bench/client_speed.py`.
"""

from __future__ import annotations

import asyncio
import bisect
import itertools
import random
import time
from typing import Any, TypeVar

import aiohttp
from aiohttp.helpers import get_env_proxy_for_url
from yarl import URL

from serving.endpoint import ChatResult, Choice, ClientConfig, Counters, Endpoint, RequestRejected
from serving.errors import EndpointError

try:  # orjson comes with vLLM; the standard library is the fallback
    from orjson import OPT_NON_STR_KEYS
    from orjson import dumps as _orjson_dumps
    from orjson import loads as _loads

    def _dumps(obj: Any) -> bytes:
        return _orjson_dumps(obj, option=OPT_NON_STR_KEYS)  # e.g. logit_bias {token_id: bias}

except ImportError:  # pragma: no cover
    import json

    def _dumps(obj: Any) -> bytes:
        return json.dumps(obj, ensure_ascii=False, separators=(",", ":")).encode()

    _loads = json.loads

T = TypeVar("T")
RETRYABLE_STATUS = {408, 409, 425, 429, 500, 502, 503, 504}
WRONG_ENDPOINT = {401, 403, 404}  # bad key, no access, unknown model: not the request's fault
# What a dropped connection, a refused connect or a timeout raises (retried like a 5xx).
TRANSPORT_ERRORS = (aiohttp.ClientError, asyncio.TimeoutError, OSError)
_JSON_HEADERS = {"Content-Type": "application/json"}


def chat_body(
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
) -> dict[str, Any]:
    """The JSON body of a chat completion request, without the model (online and batch mode send the same)."""
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
    return body


class _EndpointState:
    def __init__(self, endpoint: Endpoint) -> None:
        self.endpoint = endpoint
        self.url = f"{endpoint.base_url.rstrip('/')}/chat/completions"  # for messages: as configured
        self.in_flight = 0
        self.limit = float(endpoint.max_concurrency)  # AIMD: slots this endpoint gets now
        self.lowest = endpoint.max_concurrency  # the lowest limit it was cut to
        self.ceiling = float("inf")  # the limit at the last 429: regained fast, probed past slowly
        self.answered = 0  # successful answers (a 429 is retried while this grows)
        self.last_cut = 0.0
        self.consecutive_failures = 0
        self.rested_until = 0.0
        self.target: URL | None = None  # parsed URL, proxy (HTTP(S)_PROXY/NO_PROXY): set by _session
        self.proxy: URL | None = None
        self.proxy_auth: aiohttp.BasicAuth | None = None


class LLMClient:
    """Chat completions over several endpoints. Create it inside the event loop that uses it.

    A request takes a slot when one is free, on the least-loaded endpoint that is not resting;
    callers beyond the total concurrency wait by `priority` (lower first), then in arrival order.
    """

    def __init__(self, endpoints: list[Endpoint], config: ClientConfig | None = None) -> None:
        if not endpoints:
            raise EndpointError("no endpoint configured")
        self.config = config or ClientConfig()
        self.states = [_EndpointState(e) for e in endpoints]
        if self.config.adaptive:  # slow start: one slot more per answer until the first 429 or the cap
            for state in self.states:
                state.limit = float(min(state.endpoint.max_concurrency, 8))
        self.counters = Counters()
        self._busy = 0
        self._busy_since = 0.0
        self._waiters: list[list[Any]] = []  # [priority, arrival, future], kept sorted
        self._arrivals = itertools.count()
        self._limit = sum(e.max_concurrency for e in endpoints) + 8
        self._http: aiohttp.ClientSession | None = None  # created in the running loop, on first use

    def _session(self) -> aiohttp.ClientSession:
        if self._http is None or self._http.closed:
            for state in self.states:
                state.target = URL(state.url)
                try:  # resolved once per endpoint, not per request (aiohttp's trust_env would)
                    state.proxy, state.proxy_auth = get_env_proxy_for_url(state.target)
                except (LookupError, ValueError):
                    state.proxy, state.proxy_auth = None, None
            self._http = aiohttp.ClientSession(
                # idle connections close before uvicorn's (vLLM's) 5 s keep-alive ends: no stale reuse
                connector=aiohttp.TCPConnector(limit=self._limit, keepalive_timeout=4.0),
                timeout=aiohttp.ClientTimeout(total=self.config.timeout_s, sock_connect=10.0),
            )
        return self._http

    async def aclose(self) -> None:
        if self._http is not None:
            await self._http.close()

    def _pick(self) -> _EndpointState | None:
        """The least-loaded endpoint with a free slot, not resting (all rest: any); None if full."""
        now = time.monotonic()
        healthy = [s for s in self.states if s.rested_until <= now] or self.states
        best, best_load = None, 1.0
        for s in healthy:
            load = s.in_flight / int(s.limit)
            if load < best_load:
                best, best_load = s, load
        return best

    async def _acquire(self, priority: int) -> _EndpointState:
        if not self._waiters:
            state = self._pick()
            if state is not None:
                state.in_flight += 1
                return state
        loop = asyncio.get_running_loop()
        entry: list[Any] = [priority, next(self._arrivals), loop.create_future()]
        bisect.insort(self._waiters, entry)  # (priority, arrival) is unique: futures are never compared
        try:
            while True:
                await entry[2]
                state = self._pick()
                if state is not None:
                    self._remove(entry)
                    state.in_flight += 1
                    self._wake()  # more than one slot may have come free
                    return state
                entry[2] = loop.create_future()  # keep our place in the queue
        except BaseException:
            self._remove(entry)
            self._wake()  # a wake-up meant for us goes to the next caller
            raise

    def _remove(self, entry: list[Any]) -> None:
        i = bisect.bisect_left(self._waiters, entry)
        if i < len(self._waiters) and self._waiters[i] is entry:
            del self._waiters[i]

    def _release(self, state: _EndpointState) -> None:
        state.in_flight -= 1
        self._wake()

    def _wake(self) -> None:
        for _, _, fut in self._waiters:
            if not fut.done():
                if self._pick() is not None:
                    fut.set_result(None)
                return

    def _rate_limited(self, state: _EndpointState, sent_at: float) -> None:
        """Multiplicative decrease: halve the endpoint's limit, once per cut: a 429 to a request sent
        before the last cut says nothing new (it was sent at the old limit)."""
        self.counters.rate_limited += 1
        if not self.config.adaptive or sent_at < state.last_cut:
            return
        state.ceiling = state.limit
        state.limit = max(1.0, state.limit / 2)
        state.lowest = min(state.lowest, int(state.limit))
        state.last_cut = time.monotonic()

    def _answered(self, state: _EndpointState) -> None:
        """Increase while the endpoint runs at its limit: one slot per answer back up to just below the
        limit that drew the last 429, then one slot per 8 windows of answers (probing past it rarely, so
        429s stay a small share of requests)."""
        state.answered += 1
        cap = state.endpoint.max_concurrency
        if not self.config.adaptive or state.limit >= cap or state.in_flight < int(state.limit):
            return
        if state.limit + 1 < state.ceiling:
            state.limit = min(float(cap), state.limit + 1, max(state.ceiling - 1, 1.0))
        else:
            state.limit = min(float(cap), state.limit + 1.0 / (8 * state.limit))
        self._wake()

    def limits(self) -> dict[str, dict[str, int]]:
        """Per endpoint: its configured concurrency, where AIMD left it, and the lowest it went."""
        return {s.endpoint.base_url: {"max_concurrency": s.endpoint.max_concurrency, "settled": int(s.limit),
                                      "lowest": s.lowest} for s in self.states}  # fmt: skip

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
        priority: int = 0,
        sample: int | None = None,
    ) -> ChatResult:
        """One chat completion request (with `n` samples), retried on transient failures. `priority`
        orders it among requests waiting for a slot (lower first); `sample` is the sample index of a
        prompt's n separate requests (part of the request's identity in the journal). Neither is sent."""
        body = chat_body(messages, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                         response_format=response_format, logprobs=logprobs, top_logprobs=top_logprobs,
                         extra_body=extra_body)  # fmt: skip
        last_error = ""
        counters = self.counters
        self._busy_enter()
        try:
            attempt, limited, seen = 0, 0, -1
            while True:
                session = self._session()
                state = await self._acquire(priority)
                try:
                    ep, url = state.endpoint, state.url
                    key = ep.api_key()
                    headers = {**_JSON_HEADERS, "Authorization": f"Bearer {key}"} if key else _JSON_HEADERS
                    status, retry_after, data = 0, None, b""
                    counters.requests += 1
                    sent_at = time.monotonic()
                    try:
                        async with session.post(
                            state.target, data=_dumps({**body, "model": ep.model}), headers=headers,
                            proxy=state.proxy, proxy_auth=state.proxy_auth,
                        ) as resp:  # fmt: skip
                            data = await resp.read()
                            status = resp.status
                            if status != 200:
                                retry_after = resp.headers.get("Retry-After")
                    except TRANSPORT_ERRORS as exc:
                        last_error = f"{type(exc).__name__} from {url}"
                    if status == 200:
                        try:
                            result = self._parse(_loads(data), ep.base_url)
                        except (ValueError, KeyError, TypeError, AttributeError) as exc:
                            last_error = f"unparseable response from {url}: {exc}"
                        else:
                            state.consecutive_failures = 0
                            self._answered(state)
                            counters.prompt_tokens += result.prompt_tokens
                            counters.cached_prompt_tokens += result.cached_prompt_tokens
                            counters.completion_tokens += result.completion_tokens
                            return result
                    elif status:
                        detail = data.decode("utf-8", "replace")[:300].replace("\n", " ")
                        last_error = f"HTTP {status} from {url}: {detail}"
                        if status in WRONG_ENDPOINT:  # the key or model is wrong, not this request:
                            counters.failures += 1  # fail loudly, so nothing records it as a skip
                            raise EndpointError(f"{last_error} (check the endpoint's model name and "
                                                "api_key_env; re-run after fixing it)")  # fmt: skip
                        if status not in RETRYABLE_STATUS:
                            counters.failures += 1
                            raise RequestRejected(last_error, status)
                    if status == 429:  # too many requests: fewer at once, and this one waits its turn
                        counters.failures += 1
                        self._rate_limited(state, sent_at)
                        limited = limited + 1 if state.answered == seen else 1
                        seen = state.answered
                        if limited >= self.config.max_rate_limited:
                            raise EndpointError(
                                f"rate limited: HTTP 429 from {url} {limited} times in a row for one request "
                                "with no answer from it in between; lower the endpoint's max_concurrency or "
                                "raise your rate limit with the provider, then re-run (answers are kept)"
                            )
                    else:
                        counters.failures += 1
                        state.consecutive_failures += 1
                        if (
                            state.consecutive_failures >= self.config.rest_after_failures
                            and len(self.states) > 1
                        ):
                            state.rested_until = time.monotonic() + self.config.rest_s
                            state.consecutive_failures = 0
                finally:
                    self._release(state)  # after the rest decision, so the next caller sees it
                if status == 429:  # retried for as long as the endpoint answers others; not holding a slot
                    counters.retries += 1
                    await asyncio.sleep(self._backoff(min(limited, 6), retry_after))
                    continue
                if attempt < self.config.max_retries:
                    counters.retries += 1
                    await asyncio.sleep(self._backoff(attempt, retry_after))
                    attempt += 1
                    continue
                break
            raise EndpointError(
                f"gave up after {self.config.max_retries + 1} attempts: {last_error} "
                "(is the endpoint up? check base_url/model in the recipe)"
            )
        finally:
            self._busy_exit()

    @staticmethod
    def _parse(data: dict[str, Any], base_url: str) -> ChatResult:
        """Checks the types pydantic would check, then builds the models without re-validating."""
        choices = []
        for c in data["choices"]:
            text = c["message"].get("content") or ""
            finish = c.get("finish_reason")
            lp = c.get("logprobs") or {}
            content = lp.get("content") if isinstance(lp, dict) else None
            if not isinstance(text, str) or not (finish is None or isinstance(finish, str)):
                raise TypeError("choice text/finish_reason is not a string")
            if content is not None and not (
                isinstance(content, list) and all(isinstance(e, dict) for e in content)
            ):
                raise TypeError("logprobs.content is not a list of objects")
            choices.append(Choice.model_construct(text=text, finish_reason=finish, logprobs=content))
        usage = data.get("usage") or {}
        details = usage.get("prompt_tokens_details")
        return ChatResult.model_construct(
            choices=choices,
            prompt_tokens=int(usage.get("prompt_tokens") or 0),
            cached_prompt_tokens=int((details.get("cached_tokens") if isinstance(details, dict) else 0) or 0),
            completion_tokens=int(usage.get("completion_tokens") or 0),
            endpoint=base_url,
        )
