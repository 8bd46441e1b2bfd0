"""One background event loop per process and one client per endpoint set on it, so synchronous code
(Prefect tasks in threads, CLI commands) shares connections; counters summed for run summaries."""

from __future__ import annotations

import asyncio
import atexit
import threading
from collections.abc import Awaitable, Callable, Coroutine
from pathlib import Path
from typing import Any, TypeVar

from serving.batch import BatchClient, is_batch
from serving.client import LLMClient
from serving.endpoint import ClientConfig, Counters, Endpoint

T = TypeVar("T")


class LoopThread:
    """A background event loop so synchronous code (Prefect tasks in threads) shares one client."""

    def __init__(self) -> None:
        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True, name="rlaif-io")
        self.thread.start()

    def run(self, coro: Coroutine[Any, Any, T]) -> T:
        if _INTERRUPTED.is_set():  # Ctrl-C/SIGTERM came: start nothing new
            coro.close()
            raise KeyboardInterrupt
        return asyncio.run_coroutine_threadsafe(coro, self.loop).result()


_LOOP: LoopThread | None = None
_CLIENTS: dict[str, LLMClient | BatchClient] = {}
_LOCK = threading.Lock()
_INTERRUPTED = threading.Event()


def io_loop() -> LoopThread:
    global _LOOP
    with _LOCK:
        if _LOOP is None:
            _LOOP = LoopThread()
        return _LOOP


def shared_client(endpoints: list[Endpoint], config: ClientConfig | None = None) -> LLMClient:
    """One client per endpoint set per process, living on the shared background loop. It sends online,
    whatever the endpoints' `mode` (the gate, judge-eval and win rates wait on their answers)."""
    client = _shared("online", endpoints, config, lambda: LLMClient(endpoints, config))
    assert isinstance(client, LLMClient)
    return client


def run_client(
    endpoints: list[Endpoint], config: ClientConfig | None, run_dir: str
) -> LLMClient | BatchClient:
    """The client a run's stage uses: `shared_client`, or for `mode: batch` endpoints one `BatchClient` per
    endpoint set and run folder (its batches are recorded in RUN/batches/)."""
    if not is_batch(endpoints):
        return shared_client(endpoints, config)
    folder = Path(run_dir) / "batches"
    return _shared(f"batch:{folder}", endpoints, config, lambda: BatchClient(endpoints, config, folder))


def _shared(kind: str, endpoints: list[Endpoint], config: ClientConfig | None,
            make_client: Callable[[], LLMClient | BatchClient]) -> LLMClient | BatchClient:  # fmt: skip
    key = (
        kind
        + "|"
        + "|".join(e.model_dump_json() for e in endpoints)
        + (config or ClientConfig()).model_dump_json()
    )
    loop = io_loop()
    with _LOCK:
        if key not in _CLIENTS:

            async def make() -> LLMClient | BatchClient:
                return make_client()

            _CLIENTS[key] = asyncio.run_coroutine_threadsafe(make(), loop.loop).result()
        return _CLIENTS[key]


def total_counters() -> Counters:
    """Counters summed over every client of this process (for run summaries)."""
    total = Counters()
    with _LOCK:
        clients = list(_CLIENTS.values())
    for c in clients:
        for field in Counters.model_fields:
            setattr(total, field, getattr(total, field) + getattr(c.counters, field))
    return total


def client_limits() -> dict[str, dict[str, int]]:
    """Per endpoint of every client of this process: configured, settled and lowest concurrency (AIMD)."""
    with _LOCK:
        clients = list(_CLIENTS.values())
    out: dict[str, dict[str, int]] = {}
    for c in clients:
        out.update(c.limits())
    return out


def clear_interrupt() -> None:
    """A new command in the same process (tests, `rlaif serve`) starts uninterrupted."""
    _INTERRUPTED.clear()


def cancel_in_flight() -> None:
    """Ctrl-C/SIGTERM: cancel every coroutine on the shared loop, so the threads waiting on them (shard
    tasks) unwind at once instead of waiting for the requests in flight to be answered. Unanswered
    requests were never journalled; a re-run sends them again."""
    _INTERRUPTED.set()
    loop = _LOOP
    if loop is None or not loop.thread.is_alive():
        return

    def cancel() -> None:
        for task in asyncio.all_tasks(loop.loop):
            task.cancel()

    loop.loop.call_soon_threadsafe(cancel)


@atexit.register
def _close_shared_clients() -> None:
    """Close the shared clients' connections at exit (aiohttp complains about unclosed sessions)."""
    with _LOCK:
        loop, clients = _LOOP, list(_CLIENTS.values())
    if loop is None or not loop.thread.is_alive():
        return
    for client in clients:
        try:
            asyncio.run_coroutine_threadsafe(client.aclose(), loop.loop).result(timeout=5)
        except Exception:  # exiting anyway: never turn a clean exit into a traceback
            pass


def run_sync(fn: Callable[[], Awaitable[T]]) -> T:
    """Run a coroutine factory on the shared loop from synchronous code."""

    async def wrap() -> T:
        return await fn()

    return io_loop().run(wrap())
