"""An OpenAI chat stub that counts what it received and what it reported, so tests can check the
engine against the SERVER's figures instead of rlaif's own bookkeeping.

- `mode="unique"`: every request gets a different answer (a counter in the text), as a sampling
  model with no seed would give; answer lengths vary.
- `mode="hash"`: the answer is a function of the request body (messages, seed, every parameter), as
  a seeded model would give: two runs of the same requests get the same answers.

Usage is computed from the request, deterministically: `prompt_tokens` = characters of all message
contents // 4 + 1 (never above rlaif's own worst-case estimate), `completion_tokens` = words of the
answer, never more than `max_tokens`. Judge requests (a `response_format` json_schema named
"ratings" or "verdict") are answered with valid JSON, so the stub can be the judge too. A request
with `structured_outputs: {choice: [...]}` (vLLM's guided choice, e.g. the constitution's A/B labels)
is answered with one of the choices. A request with `logprobs: true` gets OpenAI-style
`logprobs.content` for its answer (tokens that join to the text); the token where a verdict or a
choice starts lists every option in `top_logprobs` (the answered one most likely), so a soft
preference can be read from it. In `hash` mode these, too, depend on the request body only.

`url(phase)` is a base URL whose requests are counted apart (`received_in(phase)`): give each run of a
test its own, so a request of a killed run that reaches the stub late is never counted as the next
run's. `kill(phase, k, on_kill)`: on that phase's k-th arrival the stub calls `on_kill()` (e.g.
`serving.shared.cancel_in_flight`, what Ctrl-C does) and from then on answers nothing in that phase
(held requests are dropped at `release()`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
import threading
from collections.abc import Callable
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

WORDS = ("apple river stone cloud maple lantern copper meadow violet harbor pepper quartz timber "
         "falcon saddle ember willow orbit canyon velvet thistle pebble comet garnet").split()  # fmt: skip


VERDICT_OPTIONS = ("A", "B", "tie")
_TOKEN = re.compile(r"\w+|\s+|[^\w\s]")  # a stub "tokenizer": words, runs of spaces, single signs


def prompt_tokens_of(req: dict[str, Any]) -> int:
    return sum(len(str(m.get("content") or "")) for m in req.get("messages", [])) // 4 + 1


def words_for(seed: int, count: int) -> list[str]:
    """`count` words picked by a hash chain from `seed` (distinct texts for distinct seeds)."""
    out, h = [], hashlib.sha256(str(seed).encode()).digest()
    for i in range(count):
        if i and i % 16 == 0:
            h = hashlib.sha256(h).digest()
        out.append(WORDS[h[i % 16] % len(WORDS)])
    return out


def guided_choices(req: dict[str, Any]) -> list[str]:
    """The options of a guided-choice request (`structured_outputs.choice`, or the older `guided_choice`)."""
    so = req.get("structured_outputs")
    choices = (so.get("choice") if isinstance(so, dict) else None) or req.get("guided_choice")
    return [str(c) for c in choices] if isinstance(choices, list) and choices else []


def answer_logprobs(req: dict[str, Any], text: str, seed: int) -> dict[str, Any]:
    """OpenAI-style `logprobs` of an answer: its tokens (they join to `text`), each certain (logprob 0)
    but the decision token (a verdict's value, a guided choice), where every option is listed in
    `top_logprobs`: the answered one gets 0.51-0.95, the others share 90% of the rest. A function of
    (`req`, `text`, `seed`) only."""
    top_n = int(req.get("top_logprobs") or 0)

    def entry(token: str, probs: dict[str, float]) -> dict[str, Any]:
        tops = sorted(({"token": t, "logprob": math.log(p), "bytes": list(t.encode())}
                       for t, p in probs.items()), key=lambda e: -e["logprob"])  # fmt: skip
        return {"token": token, "logprob": math.log(probs[token]), "bytes": list(token.encode()),
                "top_logprobs": tops[:top_n]}  # fmt: skip

    def plain(part: str) -> list[dict[str, Any]]:
        return [entry(t, {t: 1.0}) for t in _TOKEN.findall(part)]

    options: tuple[str, ...] = ()
    at = -1  # where the decision token starts in `text`
    fmt = req.get("response_format") or {}
    schema = fmt.get("json_schema", {}) if isinstance(fmt, dict) else {}
    if schema.get("name") == "verdict":
        key = '"verdict": "'
        options, at = VERDICT_OPTIONS, (text.find(key) + len(key) if key in text else -1)
    elif choices := guided_choices(req):
        options, at = tuple(choices), 0
    decision = next((o for o in options if at >= 0 and text.startswith(o, at)), None)
    if decision is None:
        return {"content": plain(text)}
    h = hashlib.sha256(f"logprobs-{seed}".encode()).digest()
    p_top = (51 + h[0] % 45) / 100
    others = [o for o in options if o != decision]
    weights = [1 + h[1 + i] % 8 for i in range(len(others))]
    probs = {decision: p_top} | {o: 0.9 * (1 - p_top) * w / sum(weights) for o, w in zip(others, weights)}
    return {"content": [*plain(text[:at]), entry(decision, probs), *plain(text[at + len(decision) :])]}


class CountingChatStub:
    """Serves `/v1/models` and `/v1/chat/completions` on 127.0.0.1 (a free port)."""

    def __init__(self, mode: str = "unique", model: str = "stub-policy", min_words: int = 4,
                 max_words: int = 40, near_max: int | None = None) -> None:  # fmt: skip
        """Answers are `min_words..max_words` words long (cut to `max_tokens`); with `near_max=d` a
        generation answer is `max_tokens - 1 - (call % d)` words long instead (uses its budget)."""
        assert mode in ("unique", "hash")
        self.mode, self.model = mode, model
        self.min_words, self.max_words, self.near_max = min_words, max_words, near_max
        self.lock = threading.Lock()
        self.reset()
        stub = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # keep-alive, as vLLM

            def log_message(self, *args: Any) -> None:
                pass

            def _send(self, status: int, body: dict[str, Any]) -> None:
                data = json.dumps(body).encode()
                self.send_response(status)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

            def do_GET(self) -> None:  # noqa: N802
                try:
                    self._send(200, {"object": "list", "data": [{"id": stub.model, "object": "model"}]})
                except OSError:
                    self.close_connection = True

            def do_POST(self) -> None:  # noqa: N802
                try:
                    req = json.loads(self.rfile.read(int(self.headers.get("Content-Length", 0))) or b"{}")
                    phase = self.path.split("/v1/", 1)[0].strip("/")
                    answer = stub._arrive(req, phase)
                    if answer is None:  # after the kill: never answered
                        stub._released.wait(120)
                        self.close_connection = True
                        return
                    self._send(200, answer)
                except OSError:  # the client went away (cancelled): nothing to answer
                    self.close_connection = True

        class Server(ThreadingHTTPServer):
            daemon_threads = True
            allow_reuse_address = True
            request_queue_size = 256  # socketserver's 5 drops the SYNs of a burst: 1 s connect retries

            def handle_error(self, request: Any, client_address: Any) -> None:
                pass  # a client that hung up is not an error worth a traceback here

        self.server = Server(("127.0.0.1", 0), Handler)
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True, name="unique-stub")

    # -- counters -------------------------------------------------------------------------------
    def reset(self) -> None:
        with self.lock:
            self.calls: list[dict[str, Any]] = []  # every request received, in arrival order
            self.phases: dict[str, int] = {}  # requests received per phase (`url(phase)`)
            self.answered = 0  # requests answered (the usage below is theirs)
            self.prompt_tokens = 0
            self.completion_tokens = 0
            self.texts: list[str] = []
            self.kill_phase: str | None = None
            self.kill_at: int | None = None
            self.on_kill: Callable[[], None] | None = None
            self.killed: set[str] = set()  # phases that answer nothing any more
            self.in_flight: dict[str, int] = {}  # per phase: received, answer not yet produced
            self.in_flight_at_kill: int | None = None
            self._released = threading.Event()

    def kill(self, phase: str, at: int, on_kill: Callable[[], None]) -> None:
        """On `phase`'s `at`-th arrival call `on_kill` and answer nothing more in that phase."""
        with self.lock:
            self.kill_phase, self.kill_at, self.on_kill = phase, at, on_kill
            self._released = threading.Event()

    def received_in(self, phase: str) -> int:
        with self.lock:
            return self.phases.get(phase, 0)

    def release(self) -> None:
        """Drop every request held since the kill."""
        self._released.set()

    @property
    def received(self) -> int:
        return len(self.calls)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    # -- answers --------------------------------------------------------------------------------
    def _arrive(self, req: dict[str, Any], phase: str = "") -> dict[str, Any] | None:
        kill = None
        with self.lock:
            self.calls.append(req)
            k = len(self.calls)
            self.phases[phase] = n = self.phases.get(phase, 0) + 1
            if phase in self.killed:
                return None
            if phase == self.kill_phase and n == self.kill_at:
                self.killed.add(phase)
                self.in_flight_at_kill = self.in_flight.get(phase, 0) + 1  # this one too
                kill = self.on_kill
            else:
                self.in_flight[phase] = self.in_flight.get(phase, 0) + 1
        if kill is not None:
            kill()
            return None
        try:
            body = self._answer(req, k)
        finally:
            with self.lock:
                self.in_flight[phase] -= 1
        with self.lock:
            if phase in self.killed:  # produced after the kill: the client is gone, count nothing
                return None
            self.answered += 1
            self.prompt_tokens += body["usage"]["prompt_tokens"]
            self.completion_tokens += body["usage"]["completion_tokens"]
            self.texts.append(body["choices"][0]["message"]["content"])
        return body

    def _answer(self, req: dict[str, Any], k: int) -> dict[str, Any]:
        seed = k if self.mode == "unique" else int.from_bytes(
            hashlib.sha256(json.dumps(req, sort_keys=True).encode()).digest()[:8], "big")  # fmt: skip
        max_tokens = int(req.get("max_tokens") or 512)
        fmt = req.get("response_format") or {}
        schema = fmt.get("json_schema", {}) if isinstance(fmt, dict) else {}
        if schema.get("name") == "ratings":
            n = schema["schema"]["properties"]["ratings"]["minItems"]
            items = [{"rating": 1 + (seed >> (3 * i)) % 5, "rationale": " ".join(words_for(seed + i, 3))}
                     for i in range(n)]  # fmt: skip
            text = json.dumps({"ratings": items})
        elif schema.get("name") == "verdict":
            text = json.dumps(
                {"verdict": ("A", "B", "tie")[seed % 3], "rationale": " ".join(words_for(seed, 3))}
            )
        elif choices := guided_choices(req):
            text = choices[seed % len(choices)]
        else:
            if self.near_max:
                count = max(2, max_tokens - 1 - k % self.near_max)
            else:
                count = self.min_words + seed % (self.max_words - self.min_words + 1)
            tag = f"answer-{k}" if self.mode == "unique" else f"answer-{seed % 10**8}"
            text = " ".join([tag, *words_for(seed, count - 1)])
        words = text.split()
        finish = "stop"
        if len(words) > max_tokens:  # the model ran into max_tokens: cut, as a server would
            words, finish = words[:max_tokens], "length"
            text = " ".join(words)
        usage = {"prompt_tokens": prompt_tokens_of(req), "completion_tokens": len(words)}
        usage["total_tokens"] = usage["prompt_tokens"] + usage["completion_tokens"]
        logprobs = answer_logprobs(req, text, seed) if req.get("logprobs") else None
        return {
            "id": f"stub-{k}", "object": "chat.completion", "model": req.get("model", self.model),
            "choices": [{"index": 0, "message": {"role": "assistant", "content": text},
                         "finish_reason": finish, "logprobs": logprobs}],
            "usage": usage,
        }  # fmt: skip

    # -- lifecycle ------------------------------------------------------------------------------
    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.server.server_address[1]}/v1"

    def url(self, phase: str) -> str:
        """A base URL whose requests are counted under `phase` (letters, digits, dashes)."""
        return f"http://127.0.0.1:{self.server.server_address[1]}/{phase}/v1"

    def __enter__(self) -> CountingChatStub:
        self.thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()
        self.server.shutdown()
        self.server.server_close()
