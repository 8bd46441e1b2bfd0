"""Serving bugs pinned by stubs (no vLLM): D (same-basename model folders), F (auth/unknown-model
rejections are never journalled as permanent), A (equal endpoints share the work equally)."""

from __future__ import annotations

import asyncio
import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest

from flows.engine.journal import Journal
from flows.engine.recorded import RecordingClient, StageStats
from serving.endpoint import ClientConfig, Endpoint, RequestRejected
from serving.errors import EndpointError
from serving.models import model_identity, served_name
from serving.shared import run_sync, shared_client
from serving.vllm import VllmServer
from tests.stubs import Reply, StubServer, chat_body

FAST = ClientConfig(max_retries=2, backoff_base_s=0.01, backoff_max_s=0.05, timeout_s=5)
MESSAGES = [{"role": "user", "content": "hi"}]


# --- D: two models in folders with the same basename ------------------------------------------------


def _model_folder(root: Path, hidden_size: int) -> Path:
    folder = root / "policy"  # the same basename in every root
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": hidden_size}))
    (folder / "model.safetensors").write_bytes(b"\0" * hidden_size)
    return folder


class _ModelsStub:
    """Answers `GET /v1/models` like vLLM: one card whose `root` is the path it was started with."""

    def __init__(self, served: str, root: str) -> None:
        card = {"id": served, "object": "model", "owned_by": "vllm", "root": root}

        class Handler(BaseHTTPRequestHandler):
            def log_message(self, *args: Any) -> None:
                pass

            def do_GET(self) -> None:  # noqa: N802
                data = json.dumps({"object": "list", "data": [card]}).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(data)))
                self.end_headers()
                self.wfile.write(data)

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.port = self.server.server_address[1]
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def __enter__(self) -> _ModelsStub:
        return self

    def __exit__(self, *exc: object) -> None:
        self.server.shutdown()
        self.server.server_close()


def test_model_identity_tells_same_basename_folders_apart(tmp_path):
    a, b = _model_folder(tmp_path / "a", 64), _model_folder(tmp_path / "b", 128)
    assert served_name(str(a)) == served_name(str(b)) == "policy"  # the old key could not tell them apart
    ida, idb = model_identity(str(a)), model_identity(str(b))
    assert ida != idb
    assert ida.startswith("policy@") and len(ida.split("@")[1]) == 12
    assert model_identity(str(a)) == ida  # stable
    assert model_identity(str(tmp_path / "a" / "." / "policy")) == ida  # spelling does not matter
    # other weight files in the same folder: another model
    (a / "model.safetensors").write_bytes(b"\0" * 65)
    assert model_identity(str(a)) != ida
    # names that are not folders are their own identity
    assert model_identity("org/some-model") == "org/some-model"
    assert model_identity("smollm2-135m-instruct") == "smollm2-135m-instruct"


def test_running_server_is_reused_only_for_the_same_folder(tmp_path):
    a, b = _model_folder(tmp_path / "a", 64), _model_folder(tmp_path / "b", 128)
    with _ModelsStub("policy", str(a)) as stub:
        same = VllmServer(str(a), port=stub.port, log_path=tmp_path / "a.log").start()
        assert same.reused and same.proc is None
        # the same folder spelled differently is still the same model
        assert VllmServer(str(tmp_path / "a" / ".." / "a" / "policy"), port=stub.port).start().reused
        with pytest.raises(EndpointError) as err:
            VllmServer(str(b), port=stub.port, log_path=tmp_path / "b.log").start()
    msg = str(err.value)
    assert "\n" not in msg
    assert f"port {stub.port}" in msg and str(a.resolve()) in msg and str(b.resolve()) in msg


def test_live_endpoints_share_one_server_per_folder_whatever_its_spelling(tmp_path, monkeypatch):
    from flows.engine.live_endpoints import live_endpoints
    from flows.recipe import ServedModel

    a = _model_folder(tmp_path / "a", 64)
    monkeypatch.chdir(tmp_path)
    with _ModelsStub("policy", str(a)) as stub:
        specs = [ServedModel(model=m, port=stub.port) for m in ("a/policy", str(a))]
        with live_endpoints(*specs) as eps:
            assert [e[0].model for e in eps] == ["policy", "policy"]


# --- F: 401/403/404 are not journalled; 400 is -------------------------------------------------------


class _Switchable:
    """A chat stub answering `status` until told otherwise; counts the chat requests it got."""

    def __init__(self, status: int) -> None:
        self.status = status
        self.stub = StubServer(self._reply)

    def _reply(self, req: dict[str, Any], n: int) -> Reply:
        if self.status != 200:
            return self.status, {"error": {"message": f"injected {self.status}"}}, {}
        return 200, chat_body("fine"), {}

    @property
    def calls(self) -> int:
        return len(self.stub.calls)


def _recorded_chat(base_url: str, journal: Journal) -> tuple[Any, StageStats]:
    client = shared_client([Endpoint(base_url=base_url, model="stub")], FAST)
    stats = StageStats()
    rec = RecordingClient(client, journal, "generate", "stub", stats)
    return run_sync(lambda: rec.chat(MESSAGES, temperature=0.0, max_tokens=8)), stats


@pytest.mark.parametrize("status", [401, 403, 404])
def test_auth_and_unknown_model_rejections_are_retried_on_rerun(tmp_path, status):
    path = tmp_path / "journal.jsonl"
    sw = _Switchable(status)
    with sw.stub:
        journal = Journal(path)
        with pytest.raises(EndpointError) as err:  # RequestRejected now; any EndpointError will do
            _recorded_chat(sw.stub.base_url, journal)
        assert f"HTTP {status}" in str(err.value)
        assert sw.calls == 1  # not retried within the run either
        assert journal.done == {}
        journal.close()
        assert path.read_bytes() == b""  # nothing on disk that a re-run would replay

        sw.status = 200  # the key (or the model name) is fixed; the shard is run again
        with Journal(path) as journal:
            res, stats = _recorded_chat(sw.stub.base_url, journal)
        assert sw.calls == 2  # sent again, not replayed as a skip
        assert res.choices[0].text == "fine" and stats.sent == 1 and stats.replayed == 0
        with Journal(path) as journal:
            assert len(journal.done) == 1 and "rejected" not in next(iter(journal.done.values()))


def test_bad_request_400_is_journalled_and_replayed_without_a_send(tmp_path):
    path = tmp_path / "journal.jsonl"
    sw = _Switchable(400)
    with sw.stub:
        with Journal(path) as journal, pytest.raises(RequestRejected):
            _recorded_chat(sw.stub.base_url, journal)
        assert sw.calls == 1
        with Journal(path) as journal:
            (rec,) = journal.done.values()
            assert rec["rejected"] == 400
            stats = StageStats()
            client = shared_client([Endpoint(base_url=sw.stub.base_url, model="stub")], FAST)
            rc = RecordingClient(client, journal, "generate", "stub", stats)
            with pytest.raises(RequestRejected) as err:
                run_sync(lambda: rc.chat(MESSAGES, temperature=0.0, max_tokens=8))
        assert err.value.status == 400
        assert sw.calls == 1 and stats.replayed == 1 and stats.sent == 0  # replayed, never re-sent


def test_auth_rejection_fails_the_shard_instead_of_skipping_the_prompt(tmp_path):
    from flows.dataset.prompts import PromptRow
    from flows.engine.stages import generate
    from flows.recipe import Sampling

    sw = _Switchable(401)
    with sw.stub, Journal(tmp_path / "journal.jsonl") as journal:
        client = shared_client([Endpoint(base_url=sw.stub.base_url, model="stub")], FAST)
        rec = RecordingClient(client, journal, "generate", "stub", StageStats())
        prompt = PromptRow(prompt_id="p0", prompt="hi", messages=MESSAGES)
        with pytest.raises(EndpointError):  # a skip would be cached with the shard's rows
            run_sync(lambda: generate(rec, prompt, "stub", Sampling(n=2, max_tokens=8)))


# --- A: two equal endpoints share a run equally -------------------------------------------------------


class _EqualStubs:
    """`count` fast stubs (bench/stub_server.py's protocol) on one event loop of their own: the same
    fixed latency by construction, whatever else the machine is doing."""

    def __init__(self, count: int, latency_s: float) -> None:
        from bench.stub_server import Stats, StubProtocol

        self.loop = asyncio.new_event_loop()
        self.thread = threading.Thread(target=self.loop.run_forever, daemon=True)
        self.thread.start()
        self.stats = [Stats() for _ in range(count)]

        async def start() -> list[asyncio.Server]:
            return [
                await self.loop.create_server(lambda st=st: StubProtocol(st, latency_s), "127.0.0.1", 0)
                for st in self.stats
            ]

        self.servers = asyncio.run_coroutine_threadsafe(start(), self.loop).result()
        self.base_urls = [f"http://127.0.0.1:{s.sockets[0].getsockname()[1]}/v1" for s in self.servers]

    def close(self) -> None:
        async def stop() -> None:
            for s in self.servers:
                s.close()

        asyncio.run_coroutine_threadsafe(stop(), self.loop).result()
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.thread.join(5)


def test_two_equal_endpoints_share_256_requests_within_10_percent():
    stubs = _EqualStubs(2, latency_s=0.02)
    try:
        eps = [Endpoint(base_url=u, model="stub", max_concurrency=8) for u in stubs.base_urls]
        client = shared_client(eps, FAST)

        async def run() -> None:
            await asyncio.gather(*(client.chat(MESSAGES, max_tokens=4) for _ in range(256)))

        run_sync(run)
    finally:
        stubs.close()
    a, b = (st.received for st in stubs.stats)
    assert a + b == 256
    assert abs(a - b) <= 0.1 * max(a, b), (a, b)


def test_same_basename_folders_never_share_journalled_answers(tmp_path):
    """Bug D, the cache half: journal keys use the folder's identity, not its basename."""
    from flows.engine.plan import make_plan
    from flows.recipe import Recipe

    keys = []
    for k in (1, 2):
        folder = tmp_path / f"v{k}" / "policy"
        folder.mkdir(parents=True)
        (folder / "config.json").write_text(json.dumps({"model_type": "llama", "hidden_size": 8 * k}))
        recipe = Recipe.model_validate({"policy": {"model": str(folder)}})
        eps = {"generate": recipe.policy.endpoint_list()}
        plan = make_plan(recipe, tmp_path / f"out{k}", eps)
        assert plan.policy_model == "policy"  # the dataset still names the model by its folder name
        keys.append(plan.model_key(plan.policy_model))
    assert keys[0] != keys[1] and all(k.startswith("policy@") for k in keys)
