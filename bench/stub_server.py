"""A fast OpenAI-compatible stub server for benchmarks of the orchestrator's own overhead.

Raw asyncio (HTTP/1.1 keep-alive, Content-Length bodies), fixed latency via `loop.call_later`, and
deterministic answers derived from the sha1 of the request body: a JSON instance that validates
against `response_format.json_schema.schema`, one of `structured_outputs.choice`, or prose; with
`logprobs` and `n` honoured. `GET /stats` counts requests, answers, distinct and re-sent bodies;
`POST /reset` zeroes them. Bound to 127.0.0.1 only.

    python bench/stub_server.py --port 8901 --latency-ms 20 [--stats-file stats.json]
"""

from __future__ import annotations

import argparse
import asyncio
import hashlib
import random
import re
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path
from typing import Any

try:
    from orjson import dumps, loads  # comes with vLLM
except ImportError:  # pragma: no cover
    from json import dumps as _dumps
    from json import loads

    def dumps(obj: Any) -> bytes:  # type: ignore[misc]
        return _dumps(obj, separators=(",", ":")).encode()


WORDS = (
    "the answer model response clearly explains each step of reasoning and gives a concise summary "
    "with examples because users value accuracy helpfulness honesty and care so this draft covers "
    "edge cases limits trade-offs data sources caveats and next steps in plain language"
).split()
TOKEN_RE = re.compile(r"\w+|[^\w\s]")
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
STATUS = {200: b"OK", 400: b"Bad Request", 404: b"Not Found", 411: b"Length Required"}


class Stats:
    def reset(self) -> None:
        self.received = self.answered = self.resent = 0
        self.seen: set[bytes] = set()

    __init__ = reset

    def as_dict(self) -> dict[str, int]:
        return {"received": self.received, "answered": self.answered, "distinct": len(self.seen),
                "resent": self.resent}  # fmt: skip


def prose(rng: random.Random, lo: int, hi: int) -> str:
    target, out, size = rng.randint(lo, hi), [], 0
    while size < target:
        sentence = " ".join(rng.choices(WORDS, k=rng.randint(6, 14))).capitalize() + "."
        out.append(sentence)
        size += len(sentence) + 1
    return " ".join(out)


def instance(schema: dict[str, Any], rng: random.Random, defs: dict[str, Any]) -> Any:
    """A value that validates against `schema` (the subset guided decoding uses in this project)."""
    if "$ref" in schema:
        return instance(defs.get(schema["$ref"].rsplit("/", 1)[-1], {}), rng, defs)
    if "const" in schema:
        return schema["const"]
    if "enum" in schema:
        return rng.choice(schema["enum"])
    if alts := schema.get("anyOf") or schema.get("oneOf") or schema.get("allOf"):
        return instance(alts[0], rng, defs)
    kind = schema.get("type", "object" if "properties" in schema else "string")
    if isinstance(kind, list):
        kind = next((k for k in kind if k != "null"), "null")
    if kind == "object":
        props = schema.get("properties", {})
        return {k: instance(props.get(k, {}), rng, defs) for k in dict.fromkeys([*schema.get("required", []), *props])}  # fmt: skip
    if kind == "array":
        lo = schema.get("minItems", min(1, schema.get("maxItems", 1)))
        count = rng.randint(lo, max(lo, schema.get("maxItems", lo + 2)))
        return [instance(schema.get("items", {}), rng, defs) for _ in range(count)]
    if kind == "integer":
        lo = int(schema.get("minimum", 1))
        return rng.randint(lo, max(lo, int(schema.get("maximum", lo + 4))))
    if kind == "number":
        lo = float(schema.get("minimum", 0.0))
        return round(rng.uniform(lo, max(lo, float(schema.get("maximum", lo + 1.0)))), 3)
    if kind in ("boolean", "null"):
        return rng.random() < 0.5 if kind == "boolean" else None
    text = prose(rng, 20, 80)[: schema.get("maxLength", 80)].rstrip()
    return text.ljust(schema.get("minLength", 0), ".")


def logprobs_for(content: str, k: int, rng: random.Random) -> list[dict[str, Any]]:
    out = []
    for tok in TOKEN_RE.findall(content)[:16]:
        lp = -round(rng.random() * 0.7, 4)
        alts = [t for t in ("A", "B", "the", ",", "is", "a", "of", "and", "to", "in", "it", ".") if t != tok]
        tops = [{"token": tok, "logprob": lp}]
        tops += [{"token": t, "logprob": round(lp - 1.0 - i, 4)} for i, t in enumerate(alts[: max(k, 1) - 1])]
        out.append({"token": tok, "logprob": lp, "bytes": list(tok.encode()), "top_logprobs": tops})
    return out


def complete(raw: bytes, digest: bytes) -> bytes:
    req = loads(raw)
    if "seed" in req:
        digest = hashlib.sha1(digest + str(req["seed"]).encode()).digest()
    rng = random.Random(digest)
    fmt = req.get("response_format") or {}
    choice_list = (req.get("structured_outputs") or {}).get("choice")
    chars = sum(len(str(m.get("content", ""))) for m in req.get("messages", []))
    choices: list[dict[str, Any]] = []
    completion_tokens = 0
    for i in range(int(req.get("n") or 1)):
        if fmt.get("type") == "json_schema":
            schema = (fmt.get("json_schema") or {}).get("schema") or {}
            content = dumps(instance(schema, rng, schema.get("$defs", {}))).decode()
        elif isinstance(choice_list, list) and choice_list:
            content = str(rng.choice(choice_list))
        else:
            content = prose(rng, 300, 600)
        completion_tokens += max(1, len(content) // 4)
        entry: dict[str, Any] = {"index": i, "message": {"role": "assistant", "content": content},
                                 "finish_reason": "stop", "logprobs": None}  # fmt: skip
        if req.get("logprobs"):
            entry["logprobs"] = {"content": logprobs_for(content, int(req.get("top_logprobs") or 1), rng)}
        choices.append(entry)
    usage = {"prompt_tokens": chars // 4, "completion_tokens": completion_tokens,
             "total_tokens": chars // 4 + completion_tokens}  # fmt: skip
    return dumps({"id": "chatcmpl-" + digest.hex()[:16], "object": "chat.completion", "created": int(time.time()),
                  "model": req.get("model", "stub"), "choices": choices, "usage": usage})  # fmt: skip


class StubProtocol(asyncio.Protocol):
    def __init__(self, stats: Stats, latency_s: float) -> None:
        self.stats, self.latency_s, self.buf = stats, latency_s, bytearray()
        self.transport: Any = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = transport

    def data_received(self, data: bytes) -> None:
        self.buf += data
        while (end := self.buf.find(b"\r\n\r\n")) >= 0:
            head = bytes(self.buf[:end]).decode("latin-1").split("\r\n")
            method, path = head[0].split(" ")[:2]
            headers = {k.strip().lower(): v.strip() for k, _, v in (h.partition(":") for h in head[1:])}
            if "chunked" in headers.get("transfer-encoding", ""):
                self.send(411, b'{"error":"Content-Length bodies only"}', close=True)
                return
            size = int(headers.get("content-length", 0))
            if len(self.buf) < end + 4 + size:
                return
            body = bytes(self.buf[end + 4 : end + 4 + size])
            del self.buf[: end + 4 + size]
            self.handle(method, path.split("?")[0], body, headers.get("connection", "").lower() == "close")

    def handle(self, method: str, path: str, body: bytes, close: bool) -> None:
        st = self.stats
        if method == "POST" and path.endswith("/chat/completions"):
            st.received += 1
            digest = hashlib.sha1(body).digest()
            st.resent += digest in st.seen
            st.seen.add(digest)
            try:
                status, out = 200, complete(body, digest)
            except Exception as exc:  # malformed request: answer like a server would
                status, out = 400, dumps({"error": {"message": f"bad request: {type(exc).__name__}"}})
            asyncio.get_running_loop().call_later(self.latency_s, self.answer, status, out, close)
        elif method == "GET" and path.endswith("/models"):
            self.send(200, dumps({"object": "list", "data": [{"id": "stub", "object": "model"}]}), close)
        elif method == "GET" and path == "/stats":
            self.send(200, dumps(st.as_dict()), close)
        elif method == "POST" and path == "/reset":
            st.reset()
            self.send(200, b"{}", close)
        else:
            self.send(404, b'{"error":"not found"}', close)

    def answer(self, status: int, out: bytes, close: bool) -> None:
        self.stats.answered += 1
        self.send(status, out, close)

    def send(self, status: int, out: bytes, close: bool = False) -> None:
        if self.transport.is_closing():
            return
        head = b"HTTP/1.1 %d %s\r\nContent-Type: application/json\r\nContent-Length: %d\r\n%s\r\n" % (
            status, STATUS.get(status, b"Error"), len(out), b"Connection: close\r\n" if close else b"")  # fmt: skip
        self.transport.write(head + out)
        if close:
            self.transport.close()


async def serve(port: int, latency_ms: float, stats_file: str | None) -> None:
    loop, stats, stop = asyncio.get_running_loop(), Stats(), asyncio.Event()
    server = await loop.create_server(lambda: StubProtocol(stats, latency_ms / 1000), "127.0.0.1", port)
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    server.close()
    if stats_file:
        Path(stats_file).write_bytes(dumps(stats.as_dict()))


def start_stub(port: int, latency_ms: float, stats_file: str | None = None, timeout_s: float = 20.0) -> subprocess.Popen:  # fmt: skip
    """Start the stub as a subprocess on 127.0.0.1:`port` (0 = a free one) and wait until it answers.
    The URL is `proc.base_url` (set on the returned Popen); stop it with `proc.terminate()`."""
    if not port:
        with socket.socket() as s:
            port = s.bind(("127.0.0.1", 0)) or s.getsockname()[1]
    extra = ["--stats-file", stats_file] if stats_file else []
    proc = subprocess.Popen([sys.executable, __file__, "--port", str(port), "--latency-ms", str(latency_ms), *extra])  # fmt: skip
    proc.base_url = f"http://127.0.0.1:{port}/v1"  # type: ignore[attr-defined]
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise RuntimeError(f"stub server exited with {proc.returncode} (port {port} taken?)")
        try:
            NO_PROXY.open(f"http://127.0.0.1:{port}/v1/models", timeout=1).read()
            return proc
        except OSError:
            time.sleep(0.05)
    proc.kill()
    raise RuntimeError(f"stub server on port {port} did not answer within {timeout_s:.0f} s")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--port", type=int, required=True)
    ap.add_argument("--latency-ms", type=float, default=20.0, help="fixed delay before each completion")
    ap.add_argument("--stats-file", default=None, help="write the JSON stats here on SIGTERM/SIGINT")
    args = ap.parse_args()
    try:  # uvloop comes with vLLM; the stub must not be the bottleneck
        from uvloop import run
    except ImportError:  # pragma: no cover
        from asyncio import run
    run(serve(args.port, args.latency_ms, args.stats_file))


if __name__ == "__main__":
    main()
