"""A local OpenAI batch API (`/v1/files`, `/v1/batches`) that answers every line as `CountingChatStub` in
`hash` mode answers it online, and counts what it was sent: lines per custom_id, batches, polls.

- A batch completes on its `polls`-th retrieve; `hold_from=k` keeps batch k and later `in_progress` until
  `release()`. `end_as(k)` names how batch k ends: "completed", "failed" (no output, one error) or
  "expired" (the first half of its lines answered, the rest `batch_expired` in the error file).
- `line_status(body, times)` (times: how often this custom_id was submitted) gives a line an HTTP status
  other than 200 (its answer then goes to the error file); `on_create(k)` runs when batch k is created,
  before the client hears of it (a test kills the run there).
"""

from __future__ import annotations

import email.parser
import email.policy
import itertools
import json
import threading
import time
from collections import Counter
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any
from urllib.parse import parse_qs, urlparse

from tests.unique_stub import CountingChatStub


class BatchStub:
    """Serves `/v1/models`, `/v1/files` and `/v1/batches` on 127.0.0.1 (a free port)."""

    def __init__(self, model: str = "stub-policy", polls: int = 2, hold_from: int | None = None,
                 end_as: Callable[[int], str] | None = None,
                 line_status: Callable[[dict[str, Any], int], int | None] | None = None,
                 on_create: Callable[[int], None] | None = None) -> None:  # fmt: skip
        self.model, self.polls, self.hold_from = model, polls, hold_from
        self.end_as = end_as or (lambda k: "completed")
        self.line_status = line_status or (lambda body, times: None)
        self.on_create = on_create
        self.lock = threading.Lock()
        self.released = threading.Event()
        self.files: dict[str, dict[str, Any]] = {}  # id -> file object + "data"
        self.batches: dict[str, dict[str, Any]] = {}  # id -> batch object + "lines", "polls", "k"
        self.submitted: Counter[str] = Counter()  # lines per custom_id, over every batch created
        self.answered: Counter[str] = Counter()  # lines answered with 200 (what a provider charges for)
        self.calls: Counter[str] = Counter()  # API calls by kind: upload, create, retrieve, content, list
        self._ids = itertools.count(1)
        answerer = CountingChatStub(mode="hash", model=model)  # its answer function only: no server
        answerer.server.server_close()
        self._answer = answerer._answer
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any] | bytes) -> None:
                data = body if isinstance(body, bytes) else json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/octet-stream" if isinstance(body, bytes)
                                 else "application/json")  # fmt: skip
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def _route(self, method: str) -> None:
                try:
                    url = urlparse(self.path)
                    parts = url.path.rstrip("/").split("/")[2:]  # after "/v1"
                    data = self.rfile.read(int(self.headers.get("Content-Length", 0) or 0))
                    status, body = stub.handle(method, parts, parse_qs(url.query), data,
                                               self.headers.get("Content-Type", ""))  # fmt: skip
                    self._send(status, body)
                except OSError:
                    self.close_connection = True

            def do_GET(self) -> None:  # noqa: N802
                self._route("GET")

            def do_POST(self) -> None:  # noqa: N802
                self._route("POST")

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="batch-stub")

    # -- the API --------------------------------------------------------------------------------
    def handle(self, method: str, parts: list[str], query: dict[str, list[str]], data: bytes,
               ctype: str) -> tuple[int, dict[str, Any] | bytes]:  # fmt: skip
        if method == "GET" and parts == ["models"]:
            return 200, {"object": "list", "data": [{"id": self.model, "object": "model"}]}
        if method == "POST" and parts == ["files"]:
            return 200, self._upload(data, ctype)
        if method == "GET" and len(parts) >= 2 and parts[0] == "files":
            with self.lock:
                f = self.files.get(parts[1])
                if f is None:
                    return 404, {"error": {"message": f"no file {parts[1]}", "code": "not_found"}}
                if parts[2:] == ["content"]:
                    self.calls["content"] += 1
                    return 200, f["data"]
                return 200, {k: v for k, v in f.items() if k != "data"}
        if method == "POST" and parts == ["batches"]:
            return self._create(json.loads(data))
        if method == "GET" and parts == ["batches"]:
            with self.lock:
                self.calls["list"] += 1
                newest = sorted(self.batches.values(), key=lambda b: -b["k"])
                return 200, {"object": "list", "data": [self._public(b) for b in newest], "has_more": False}
        if method == "GET" and len(parts) == 2 and parts[0] == "batches":
            return self._retrieve(parts[1])
        return 404, {"error": {"message": f"no route {method} /v1/{'/'.join(parts)}"}}

    def _upload(self, data: bytes, ctype: str) -> dict[str, Any]:
        msg = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(
            f"Content-Type: {ctype}\r\n\r\n".encode() + data
        )
        fields = {p.get_param("name", header="content-disposition"): p for p in msg.iter_parts()}
        content = fields["file"].get_payload(decode=True)
        return self._new_file(content, fields["file"].get_filename() or "upload.jsonl", "batch", "upload")

    def _new_file(self, content: bytes, name: str, purpose: str, kind: str) -> dict[str, Any]:
        with self.lock:
            if kind:
                self.calls[kind] += 1
            fid = f"file-{next(self._ids)}"
            self.files[fid] = {"id": fid, "object": "file", "bytes": len(content), "created_at": int(time.time()),
                               "filename": name, "purpose": purpose, "status": "processed", "data": content}  # fmt: skip
            return {k: v for k, v in self.files[fid].items() if k != "data"}

    def _create(self, req: dict[str, Any]) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls["create"] += 1
            f = self.files.get(req.get("input_file_id", ""))
            if f is None:
                return 404, {"error": {"message": "no such input file"}}
            lines = [json.loads(raw) for raw in f["data"].decode().splitlines() if raw.strip()]
            ids = [line["custom_id"] for line in lines]
            assert len(set(ids)) == len(ids), "duplicate custom_id in one batch"
            self.submitted.update(ids)
            k = len(self.batches) + 1
            bid = f"batch_{k:04d}"
            self.batches[bid] = {
                "id": bid, "object": "batch", "endpoint": req["endpoint"], "input_file_id": f["id"],
                "completion_window": req["completion_window"], "status": "validating",
                "created_at": int(time.time()), "output_file_id": None, "error_file_id": None, "errors": None,
                "request_counts": {"total": len(lines), "completed": 0, "failed": 0},
                "lines": lines, "polls": 0, "k": k, "times": [self.submitted[i] for i in ids],
            }  # fmt: skip
            public = self._public(self.batches[bid])
        if self.on_create is not None:
            self.on_create(k)
        return 200, public

    def _retrieve(self, bid: str) -> tuple[int, dict[str, Any]]:
        with self.lock:
            self.calls["retrieve"] += 1
            b = self.batches.get(bid)
            if b is None:
                return 404, {"error": {"message": f"no batch {bid}"}}
            held = self.hold_from is not None and b["k"] >= self.hold_from and not self.released.is_set()
            if b["status"] in ("validating", "in_progress"):
                b["polls"] += 1
                b["status"] = "in_progress"
                if b["polls"] >= self.polls and not held:
                    self._finish(b)
            return 200, self._public(b)

    def _finish(self, b: dict[str, Any]) -> None:
        """Answer a batch's lines (lock held)."""
        end = self.end_as(b["k"])
        b["status"] = end
        if end == "failed":
            b["errors"] = {"object": "list", "data": [{"code": "invalid_request", "message": "stub says no",
                                                       "line": 1, "param": None}]}  # fmt: skip
            return
        out, err = [], []
        for i, (line, times) in enumerate(zip(b["lines"], b["times"])):
            cid = line["custom_id"]
            if end == "expired" and i >= len(b["lines"]) // 2:
                err.append({"id": f"req-{i}", "custom_id": cid, "response": None,
                            "error": {"code": "batch_expired", "message": "not done in time"}})  # fmt: skip
                continue
            status = self.line_status(line["body"], times) or 200
            if status != 200:
                body = {"error": {"message": f"stub line error {status}", "type": "error", "code": None}}
                err.append({"id": f"req-{i}", "custom_id": cid,
                            "response": {"status_code": status, "request_id": f"r{i}", "body": body},
                            "error": None})  # fmt: skip
                continue
            answer = self._answer(line["body"], 0)
            self.answered[cid] += 1
            out.append({"id": f"req-{i}", "custom_id": cid, "error": None,
                        "response": {"status_code": 200, "request_id": f"r{i}", "body": answer}})  # fmt: skip
        b["request_counts"] = {"total": len(b["lines"]), "completed": len(out), "failed": len(err)}
        for rows, key in ((out, "output_file_id"), (err, "error_file_id")):
            if rows:
                data = "".join(json.dumps(r) + "\n" for r in rows).encode()
                fid = f"file-{next(self._ids)}"
                self.files[fid] = {"id": fid, "object": "file", "bytes": len(data), "created_at": int(time.time()),
                                   "filename": f"{key}.jsonl", "purpose": "batch_output", "status": "processed",
                                   "data": data}  # fmt: skip
                b[key] = fid

    @staticmethod
    def _public(b: dict[str, Any]) -> dict[str, Any]:
        return {k: v for k, v in b.items() if k not in ("lines", "polls", "k", "times")}

    # -- for tests ------------------------------------------------------------------------------
    def release(self) -> None:
        """Held batches complete on their next poll."""
        self.released.set()

    @property
    def created(self) -> int:
        with self.lock:
            return len(self.batches)

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def __enter__(self) -> BatchStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
