"""Batch mode (issue 22 item 2) against a local OpenAI batch API (tests/batch_stub.py), counted at the stub:
the same datasets as online mode, each request submitted once across a kill -9 and a re-run, a failed or
expired batch as one line, and per-line errors as online mode raises them. Last, the vLLM path for real:
the same JSONL through vLLM's batch runner on the bundled model (`slow`: it starts the model, ~2 min).

The recipe is tests/test_same_datasets.py's (every kind of feedback) with every endpoint in `mode: batch`;
the online reference is the same recipe against `CountingChatStub(mode="hash")`, which answers a request
as the batch stub answers its line.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from serving.batch import BatchClient, LineError, custom_id
from serving.endpoint import ChatResult, ClientConfig, Endpoint, RequestRejected
from serving.errors import EndpointError
from tests.batch_stub import BatchStub
from tests.helpers import wait_for, write_jsonl
from tests.test_same_datasets import CHATS, canonical, first_differences, recipe_text
from tests.unique_stub import CountingChatStub

ROOT = Path(__file__).resolve().parents[1]
BATCH = "mode: batch, batch_window_s: 0.2, batch_poll_s: 0.05"
PRICE = "price: {input: 1.0, output: 2.0}"


def recipe(tmp: Path, url: str, batch: bool) -> Path:
    """The golden recipe (a priced policy), every endpoint online or in batch mode."""
    prompts = write_jsonl(tmp / "prompts.jsonl", [{"messages": m} for m in CHATS])
    text = recipe_text(url, prompts).replace("policy: {endpoints", f"policy: {{{PRICE}, endpoints")
    if batch:
        text = text.replace(f"base_url: {url},", f"base_url: {url}, {BATCH},")
    path = tmp / f"{'batch' if batch else 'online'}.yaml"
    path.write_text(text)
    return path


def cli(path: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "flows.cli", "run", str(path), "--out", str(out)]


def env() -> dict[str, str]:
    return {**os.environ, "RLAIF_PROGRESS": "0"}


def run(path: Path, out: Path) -> subprocess.CompletedProcess[str]:
    proc = subprocess.run(cli(path, out), env=env(), capture_output=True, text=True, timeout=600)
    assert proc.returncode == 0, f"rlaif run exited {proc.returncode}:\n{proc.stderr[-3000:]}"
    return proc


def datasets(out: Path) -> dict[str, Any]:
    """`canonical` without the usage counts, which split into sent and replayed differently on a resume."""
    got = canonical(out)
    del got["counts"]["usage"]
    return got


def same(out: Path, want: dict[str, Any]) -> None:
    got = datasets(out)
    assert got == want, "\n".join(first_differences(want, got))


def summary(out: Path) -> dict[str, Any]:
    return json.loads((out / "summary.json").read_text())


@pytest.fixture(scope="module")
def online(tmp_path_factory: pytest.TempPathFactory) -> tuple[dict[str, Any], dict[str, Any]]:
    """The online run's datasets (canonical form) and summary."""
    tmp = tmp_path_factory.mktemp("online")
    with CountingChatStub(mode="hash") as stub:
        out = tmp / "out"
        run(recipe(tmp, stub.base_url, batch=False), out)
    return datasets(out), summary(out)


def test_batch_mode_gives_the_online_datasets_at_the_batch_price(tmp_path, online):
    with BatchStub() as stub:
        out = tmp_path / "out"
        run(recipe(tmp_path, stub.base_url, batch=True), out)
    same(out, online[0])  # ultrafeedback and the four binarized splits, rows and features
    want = {k: {f: u[f] for f in ("requests", "replayed")} for k, u in online[1]["usage"].items()}
    assert {k: {f: u[f] for f in ("requests", "replayed")} for k, u in summary(out)["usage"].items()} == want
    assert stub.created >= 4 and max(stub.submitted.values()) == 1  # generation -> judges -> revisions
    got = summary(out)
    assert sum(u["requests"] for u in got["usage"].values()) == sum(stub.submitted.values())
    records = sorted(p.name for p in (out / "batches").iterdir())
    assert records == sorted(f"{b}.json" for b in stub.batches)  # every batch recorded, none pending
    cost, full = got["usage"]["generate"]["cost_usd"], online[1]["usage"]["generate"]["cost_usd"]
    assert full > 0 and cost == pytest.approx(full / 2)  # tokens answered through batches: half price


def start(path: Path, out: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(cli(path, out), env=env(), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL,
                            start_new_session=True)  # fmt: skip


def kill(proc: subprocess.Popen[bytes]) -> None:
    with contextlib.suppress(ProcessLookupError):  # the run and what it started (Prefect's server)
        os.killpg(proc.pid, signal.SIGKILL)


@pytest.mark.parametrize("when", ["creating", "waiting"])
def test_killed_after_submission_rerun_pays_each_request_once(tmp_path, online, when):
    """kill -9 of `rlaif run` once its 3rd batch exists: while the stub creates it (the run never hears its
    id: only the pending record names its input file) or while it is in progress (recorded). The re-run
    re-attaches: every custom_id was submitted once in all, and the datasets are the online run's. A
    second re-run answers from the journal and makes no batch API call at all."""
    k, box = 3, {}

    def on_create(n: int) -> None:
        if when == "creating" and n == k:
            kill(box["proc"])

    with BatchStub(hold_from=k, on_create=on_create) as stub:
        path, out = recipe(tmp_path, stub.base_url, batch=True), tmp_path / "out"
        box["proc"] = proc = start(path, out)
        try:
            record = out / "batches" / f"batch_{k:04d}.json"
            wait_for(lambda: proc.poll() is not None or record.exists(), 600, f"batch {k} created")
            assert stub.created >= k, f"the run exited with code {proc.returncode} before batch {k}"
        finally:
            kill(proc)
            proc.wait(timeout=60)
        assert not (out / "build.json").exists()
        if when == "creating":  # the batch being created is known by its input file only
            assert list((out / "batches").glob("pending-*.json"))
        stub.release()
        run(path, out)
        assert max(stub.submitted.values()) == 1  # each request submitted (so paid) once in all
        assert max(stub.answered.values()) == 1
        same(out, online[0])
        assert not list((out / "batches").glob("pending-*.json"))

        calls = dict(stub.calls)
        shutil.rmtree(out / ".prefect")
        for f in [
            *out.glob("shards/*/result-*.json"),
            *out.glob("shards/*/rows-*.parquet"),
            out / "build.json",
        ]:
            f.unlink()
        run(path, out)
        assert dict(stub.calls) == calls  # from the journal: no upload, batch, poll or download
    same(out, online[0])


@pytest.mark.parametrize("end", ["failed", "expired"])
def test_a_failed_or_expired_batch_is_one_line_and_a_nonzero_exit(tmp_path, end):
    """The run stops with one line naming the endpoint and the batch; a re-run submits what was not
    answered (an expired batch's answers are journalled: never submitted again)."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Name thing number {i}."} for i in range(6)])
    with BatchStub(end_as=lambda k: end if k <= 2 else "completed") as stub:  # the shard's retry fails too
        path = tmp_path / "r.yaml"
        path.write_text(f"""name: fail
prompts: {{path: {prompts}}}
policy: {{endpoints: [{{base_url: {stub.base_url}, model: stub-policy, {BATCH}}}]}}
sampling: {{n: 2, seed: 1, max_tokens: 16}}
judges: [{{type: ultrafeedback, aspects: [helpfulness], judge: {{endpoints: [{{base_url: {stub.base_url}, model: uf, {BATCH}}}]}}}}]
""")
        out = tmp_path / "out"
        proc = subprocess.run(cli(path, out), env=env(), capture_output=True, text=True, timeout=600)
        lines = [line for line in proc.stderr.splitlines() if line.startswith("rlaif:")]
        assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert len(lines) == 1 and stub.base_url in lines[0] and f"{end}" in lines[0], proc.stderr[-3000:]
        assert any(bid in lines[0] for bid in stub.batches), lines[0]
        run(path, out)
    assert max(stub.answered.values()) == 1  # nothing answered is submitted again
    assert len(stub.answered) == 6 * 2 + 6  # 2 completions and 1 aspect rating per prompt


def test_line_errors_are_raised_as_online_mode_raises_them(tmp_path):
    """A 400 line is the request's refusal (journalled by the engine as online); a 500 line goes into the
    next batch (failed lines are not charged); a 401 line is the endpoint's fault, with the fix."""

    def status(body: dict[str, Any], times: int) -> int | None:
        text = body["messages"][0]["content"]
        return {"bad": 400, "flaky": 500 if times == 1 else None, "key": 401}.get(text)

    async def main(url: str) -> list[Any]:
        ep = Endpoint(base_url=url, model="stub-policy", mode="batch", batch_window_s=0.05, batch_poll_s=0.01)
        client = BatchClient([ep], ClientConfig(), tmp_path / "batches")
        try:
            return await asyncio.gather(*(client.chat([{"role": "user", "content": t}], max_tokens=8)
                                          for t in ("ok", "bad", "flaky", "key")), return_exceptions=True)  # fmt: skip
        finally:
            await client.aclose()

    with BatchStub(polls=1, line_status=status) as stub:
        ok, bad, flaky, key = asyncio.run(main(stub.base_url))
    assert ok.choices[0].text and flaky.choices[0].text
    assert isinstance(bad, RequestRejected) and bad.status == 400 and "batch_0001" in str(bad)
    assert isinstance(key, EndpointError) and "api_key_env" in str(key)
    assert stub.created == 2 and sorted(stub.submitted.values()) == [1, 1, 1, 2]  # the 500 line, again


def test_an_answer_whose_caller_is_gone_is_kept_for_the_next_ask(tmp_path):
    """A shard that fails leaves its requests in batches; the shard's retry asks again and takes their
    answers when they come, instead of submitting them (and paying) again."""
    ask = [{"role": "user", "content": "kept"}]

    async def main(stub: BatchStub) -> str:
        ep = Endpoint(base_url=stub.base_url, model="stub-policy", mode="batch", batch_window_s=0.01,
                      batch_poll_s=0.01)  # fmt: skip
        client = BatchClient([ep], ClientConfig(), tmp_path / "batches")
        try:
            first = asyncio.ensure_future(client.chat(ask, max_tokens=8))
            while stub.created < 1:
                await asyncio.sleep(0.01)
            first.cancel()  # its shard failed
            stub.release()
            while not stub.answered:
                await asyncio.sleep(0.01)
            await asyncio.sleep(0.1)  # the answer reaches the client, which nobody waits on now
            return (await client.chat(ask, max_tokens=8)).choices[0].text
        finally:
            await client.aclose()

    with BatchStub(polls=1, hold_from=1) as stub:
        text = asyncio.run(main(stub))
    assert text and stub.created == 1 and list(stub.submitted.values()) == [1]


@pytest.mark.slow
def test_vllm_run_batch_answers_the_lines_batch_mode_writes(tmp_path):
    """The vLLM path for real: the batch JSONL run by vLLM's own batch runner on the bundled model (no
    server), read back by custom_id; a line the engine refuses is the request's refusal, as online."""
    from serving.batch_local import run_local_batch
    from serving.client import chat_body
    from serving.models import served_name

    name = served_name(None)
    bodies = [chat_body([{"role": "user", "content": f"Name a colour, number {i}."}], max_tokens=8, seed=i)
              | {"model": name} for i in range(3)]  # fmt: skip
    bodies.append(chat_body([{"role": "user", "content": "Too long."}], max_tokens=10**6) | {"model": name})
    lines = [(custom_id(b, None), b) for b in bodies]
    got = run_local_batch(lines, tmp_path)
    answers = [got[cid] for cid, _ in lines]
    assert all(isinstance(a, ChatResult) and a.choices[0].text and a.completion_tokens for a in answers[:3])
    assert isinstance(answers[3], LineError) and answers[3].status == 400, answers[3]


def test_the_estimate_prices_batch_stages_at_the_batch_price_and_says_so(tmp_path):
    from flows.engine.cost_estimate import estimate_recipe
    from flows.recipe import load_recipe

    url = "http://127.0.0.1:9/v1"  # nothing answers there: the estimate sends no request
    online = estimate_recipe(load_recipe(recipe(tmp_path, url, batch=False)), tmp_path / "o", sample=4)
    batch = estimate_recipe(load_recipe(recipe(tmp_path, url, batch=True)), tmp_path / "b", sample=4)
    assert online.total.usd_max and batch.total.usd_max == pytest.approx(online.total.usd_max / 2, rel=1e-3)
    assert any(n.startswith("USD of generate") and "batch price" in n for n in batch.notes), batch.notes
    assert not any("batch price" in n for n in online.notes)
