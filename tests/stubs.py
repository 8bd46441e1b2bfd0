"""Fault-injecting HTTP stubs (a real vLLM cannot produce these on demand): 429/5xx bursts,
garbage or fixed judge answers. Each stub is named for what it injects."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]


def send_json(
    handler: BaseHTTPRequestHandler, status: int, body: dict[str, Any] | str | bytes, headers: dict[str, str]
) -> None:
    data = (
        body
        if isinstance(body, bytes)
        else body.encode()
        if isinstance(body, str)
        else json.dumps(body).encode()
    )
    handler.send_response(status)
    handler.send_header("Content-Type", "application/json")
    for k, v in headers.items():
        handler.send_header(k, v)
    handler.send_header("Content-Length", str(len(data)))
    handler.end_headers()
    handler.wfile.write(data)


def chat_body(text: str, n: int = 1) -> dict[str, Any]:
    return {
        "id": "stub", "object": "chat.completion", "model": "stub",
        "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                     "finish_reason": "stop", "logprobs": None} for i in range(n)],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }  # fmt: skip


class StubServer:
    """Serves `/v1/models` and `/v1/chat/completions`; `reply(request_json, call_no)` decides."""

    def __init__(self, reply: Callable[[dict[str, Any], int], Reply]) -> None:
        self.reply = reply
        self.calls: list[dict[str, Any]] = []
        self.headers: list[dict[str, str]] = []
        self.lock = threading.Lock()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | str, headers: dict[str, str]) -> None:
                send_json(self, status, body, headers)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"data": [{"id": "stub"}]}, {})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                with stub.lock:
                    stub.calls.append(req)
                    stub.headers.append(dict(self.headers))
                    n = len(stub.calls)
                self._send(*stub.reply(req, n))

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> StubServer:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def status_burst(status: int, times: int, text: str = "ok", retry_after: str | None = "0") -> StubServer:
    """Answers `status` for the first `times` calls, then 200 with `text`."""

    def reply(req: dict[str, Any], n: int) -> Reply:
        if n <= times:
            return (
                status,
                {"error": {"message": f"injected {status}"}},
                ({"Retry-After": retry_after} if retry_after else {}),
            )
        return 200, chat_body(text, req.get("n", 1)), {}

    return StubServer(reply)


def always_answers(text: str) -> StubServer:
    """A judge that always answers the same text (e.g. a fixed verdict, or garbage)."""
    return StubServer(lambda req, n: (200, chat_body(text, req.get("n", 1)), {}))


class FaultProxy:
    """Forwards to a real server and injects what the real server cannot do on demand: going away
    (`stop()`/`start()` on the same port), 429 storms and garbage answers (`fault(call_no)`).
    With `memo=True` it answers a request body it has already forwarded with the recorded answer
    (`memo_hits` counts them), so two runs can be compared without the server's batch-dependent
    numerics: the real model answered every request once."""

    def __init__(self, target_base_url: str, fault: Callable[[dict[str, Any], int], Reply | None] | None = None,
                 port: int = 0, memo: bool = False) -> None:  # fmt: skip
        import httpx

        self.target = target_base_url.rstrip("/")
        self.fault = fault
        self.memo: dict[str, bytes] | None = {} if memo else None  # request body -> 200 answer
        self.memo_hits = 0
        self.calls = 0
        self.forwarded = 0
        self.port = port
        self._http = httpx.Client(timeout=600)
        self._lock = threading.Lock()
        self.server: ThreadingHTTPServer | None = None

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.port}/v1"

    def _handler(self) -> type[BaseHTTPRequestHandler]:
        proxy = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | str | bytes, headers: dict[str, str]) -> None:
                send_json(self, status, body, headers)

            def do_GET(self) -> None:  # noqa: N802
                r = proxy._http.get(proxy.target + self.path.removeprefix("/v1"))
                self._send(r.status_code, r.content, {})

            def do_POST(self) -> None:  # noqa: N802
                body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
                req = json.loads(body or b"{}")
                with proxy._lock:
                    proxy.calls += 1
                    n = proxy.calls
                injected = proxy.fault(req, n) if proxy.fault else None
                if injected is not None:
                    self._send(*injected)
                    return
                memo = proxy.memo
                key = json.dumps(req, sort_keys=True) if memo is not None else ""
                if memo is not None and key in memo:
                    with proxy._lock:
                        proxy.memo_hits += 1
                    self._send(200, memo[key], {})
                    return
                try:
                    r = proxy._http.post(proxy.target + self.path.removeprefix("/v1"), content=body,
                                         headers={"Content-Type": "application/json"})  # fmt: skip
                except Exception:  # the proxy was stopped while this request was in flight
                    self.close_connection = True
                    return
                with proxy._lock:
                    proxy.forwarded += 1
                    if memo is not None and r.status_code == 200:
                        memo[key] = r.content
                self._send(r.status_code, r.content, {})

        return Handler

    def start(self) -> FaultProxy:
        self.server = ThreadingHTTPServer(("127.0.0.1", self.port), self._handler())
        self.server.daemon_threads = True
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()
        return self

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    def __enter__(self) -> FaultProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
