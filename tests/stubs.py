"""Fault-injecting HTTP stubs (a real vLLM cannot produce these on demand): 429/5xx bursts,
garbage or fixed judge answers. Each stub is named for what it injects."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

Reply = tuple[int, dict[str, Any] | str, dict[str, str]]


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
        stub = self

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | str, headers: dict[str, str]) -> None:
                data = body.encode() if isinstance(body, str) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                for k, v in headers.items():
                    self.send_header(k, v)
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                self._send(200, {"data": [{"id": "stub"}]}, {})

            def do_POST(self) -> None:  # noqa: N802
                length = int(self.headers.get("Content-Length", 0))
                req = json.loads(self.rfile.read(length) or b"{}")
                with threading.Lock():
                    stub.calls.append(req)
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
