"""Crash and resume: a server that goes away, SIGINT mid-run, 429 storms, garbage judge answers."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

from flows.cli import main
from tests.helpers import journal_lines, uf_rows, wait_for, write_jsonl
from tests.stubs import FaultProxy, chat_body

PROMPTS = [{"prompt": f"Write one short sentence about the number {i}."} for i in range(8)]


def assert_journalled_once(out: Path, total: int) -> None:
    """Each of `total` request keys is on exactly one raw journal line (read as written: `Journal` keeps
    the first record per key when it loads, so a deduped view could never show a key written twice)."""
    keys = Counter(r["k"] for r in journal_lines(out))
    twice = {k: n for k, n in keys.items() if n > 1}
    assert not twice, f"{len(twice)} request keys journalled more than once"
    assert len(keys) == total


def alive(proc: subprocess.Popen) -> bool:
    """True while `proc` runs; fails at once (instead of at a deadline) when it has exited."""
    assert proc.poll() is None, f"the run exited early with code {proc.returncode}"
    return True


def assert_all_samples(out: Path) -> None:
    """Nothing lost: every prompt is a row with both of its samples."""
    rows = uf_rows(out)
    assert len(rows) == len(PROMPTS)
    assert all(sorted(c["sample_index"] for c in r["completions"]) == [0, 1] for r in rows)


def recipe(tmp_path: Path, endpoint_block: str, extra: str = "") -> Path:
    data = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    p = tmp_path / "r.yaml"
    p.write_text(f"name: rel\nprompts:\n  path: {data}\npolicy:\n{endpoint_block}sampling:\n  n: 2\n"
                 f"  max_tokens: 24\nshard_size: 2\nclient:\n  max_retries: 1\n  backoff_base_s: 0.05\n{extra}")  # fmt: skip
    return p


def test_server_dies_mid_generate_then_resume_exactly_once(vllm_server, tmp_path, capsys):
    """The server goes away with requests in flight; the re-run sends exactly what was not journalled.
    The proxy holds every request after the third until the server has gone, so the stop always lands
    mid-run, after exactly 3 answers, however busy the machine is."""
    gone = threading.Event()

    def hold(req: dict, n: int) -> None:
        if n > 3:  # in flight when the server goes: answered after the stop (or cancelled), never lost
            gone.wait(600)

    proxy = FaultProxy(vllm_server.base_url, hold).start()
    block = (f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
             "      max_concurrency: 2\n")  # fmt: skip
    path, out = recipe(tmp_path, block), tmp_path / "out"

    returned = threading.Event()

    def killer() -> None:  # the "server" goes away once 3 answers are journalled
        try:
            wait_for(lambda: len(journal_lines(out)) >= 3 or returned.is_set(), 600, "3 journalled answers")
        finally:
            proxy.stop()
            gone.set()

    t = threading.Thread(target=killer)
    t.start()
    try:
        try:
            code = main(["generate", str(path), "--out", str(out)])
        finally:
            returned.set()
            t.join()
        err = capsys.readouterr().err
        assert code == 2 and proxy.base_url in err, err[-2000:]
        finished = len(journal_lines(out))
        assert 3 <= finished < 16 and not (out / "build.json").exists()

        proxy.start()  # the server is back, same URL
        before = proxy.calls  # counted on arrival: nothing of the first run can still come in
        assert main(["generate", str(path), "--out", str(out)]) == 0
        sent = proxy.calls - before
    finally:
        gone.set()
        proxy.stop()
    # the server saw each request that was not journalled once, and no journalled one again
    assert sent == 16 - finished, f"re-run sent {sent}, {16 - finished} were not journalled"
    assert_journalled_once(out, 16)
    assert_all_samples(out)


def test_sigint_leaves_no_partial_shard_and_rerun_completes(vllm_server, tmp_path):
    """SIGINT while requests are in flight. The proxy holds every request after the second, so the
    signal always lands mid-run (straight to vLLM, all 16 answers can arrive within one poll); the
    re-run sends exactly the requests that were not journalled, counted where they arrive."""
    release = threading.Event()

    def hold(req: dict, n: int) -> None:
        if n > 2:
            release.wait(600)

    with FaultProxy(vllm_server.base_url, hold) as proxy:
        block = f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
        path, out = recipe(tmp_path, block), tmp_path / "out"
        env = {**os.environ, "RLAIF_PROGRESS": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "generate", str(path), "--out", str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        try:  # requests were in flight (held) when the signal came
            wait_for(lambda: alive(proc) and len(journal_lines(out)) >= 2 and proxy.calls > 2, 600,
                     "2 journalled answers and a held request")  # fmt: skip
            proc.send_signal(signal.SIGINT)
            _, err = proc.communicate(timeout=300)  # exits with requests still held: they are cancelled
        finally:
            release.set()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
        assert proc.returncode == 130, err[-2000:]
        assert "rlaif: interrupted" in err and "Traceback" not in err, err[-2000:]
        journalled = len(journal_lines(out))
        assert journalled == 2
        assert not (out / "build.json").exists()  # nothing that looks finished
        for res in out.glob("shards/*/result-*.json"):  # a shard that looks finished is complete
            assert json.loads(res.read_text())["completions"] == 4
        before = proxy.calls  # the interrupted run's requests all arrived before the signal
        assert main(["generate", str(path), "--out", str(out)]) == 0
        resent = proxy.calls - before
    assert resent == 16 - journalled, f"re-run sent {resent}, {16 - journalled} were not journalled"
    assert_journalled_once(out, 16)
    assert_all_samples(out)


def test_429_storm_and_garbage_judge_complete_and_are_counted(vllm_server, tmp_path):
    slowed: Counter[str] = Counter()  # 429s per request body
    lock = threading.Lock()

    def fault(req: dict, n: int):
        body = json.dumps(req, sort_keys=True)
        with lock:  # every third arrival, but never one request more than twice: whatever order the
            storm = n % 3 == 0 and slowed[body] < 2  # arrivals come in, no request exhausts its 4 retries
            slowed[body] += storm
        if storm:
            return 429, {"error": {"message": "slow down"}}, {"Retry-After": "0"}
        if n % 5 == 0:  # ~20% garbage answers
            return 200, chat_body("<<garbage, not json>>"), {}
        return None

    with FaultProxy(vllm_server.base_url, fault) as judge:
        extra = ("judges:\n  - type: ultrafeedback\n    judge:\n      endpoints:\n"
                 f"        - base_url: {judge.base_url}\n          model: {vllm_server.model_name}\n"
                 "client:\n  max_retries: 4\n  backoff_base_s: 0.01\n")  # fmt: skip
        path = recipe(tmp_path, f"  port: {vllm_server.port}\n")
        path.write_text(path.read_text().split("client:")[0] + extra)
        out = tmp_path / "out"
        assert main(["run", str(path), "--out", str(out), "--limit", "4"]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["client"]["retries"] >= 1 and summary["client"]["failures"] >= 1
    assert summary["stages"]["judge"]["skipped"]["parse_failures"] >= 1
    card = (out / "README.md").read_text()
    assert "| ultrafeedback | ultrafeedback |" in card
    assert summary["build"]["judges"]["ultrafeedback"]["parse_failures"] >= 1


def test_read_only_output_fails_before_any_model_call(vllm_server, tmp_path, capsys):
    with FaultProxy(vllm_server.base_url) as proxy:
        block = f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
        path = recipe(tmp_path, block)
        blocker = tmp_path / "a-file"
        blocker.write_text("not a folder")
        target = Path("/sys/rlaif-out") if os.geteuid() == 0 else blocker / "out"
        assert main(["run", str(path), "--out", str(target)]) == 2
        assert proxy.calls == 0  # no model call was made
    err = capsys.readouterr().err
    assert "not writable" in err and str(target) in err


def test_kill_9_mid_judge_resumes_per_request(vllm_server, tmp_path):
    """kill -9 of `rlaif run` while judging; the re-run sends exactly what was not journalled. The proxy
    holds every judge request after the third, so the kill always lands with judge requests in flight
    and exactly 3 judge answers journalled, however busy the machine is."""
    prompts = {p["prompt"] for p in PROMPTS}  # a generation request's message is the prompt itself
    release, lock, judge_calls, held = threading.Event(), threading.Lock(), [0], [0]

    def hold(req: dict, n: int) -> None:
        if (req.get("messages") or [{}])[-1].get("content") in prompts:
            return
        with lock:
            judge_calls[0] += 1
            if judge_calls[0] <= 3:
                return
            held[0] += 1
        release.wait(600)

    with FaultProxy(vllm_server.base_url, hold) as proxy:
        block = f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
        extra = "judges:\n  - type: ultrafeedback\n    aspects: [helpfulness, honesty]\n    max_tokens: 96\n"
        path, out = recipe(tmp_path, block, extra), tmp_path / "out"
        env = {**os.environ, "RLAIF_PROGRESS": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(path), "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        try:
            wait_for(lambda: alive(proc) and len(journal_lines(out, "judge:ultrafeedback")) >= 3 and held[0] >= 1,
                     600, "3 journalled judge answers and a judge request in flight")  # fmt: skip
        finally:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(timeout=60)
            release.set()  # the held requests reach vLLM now; nobody reads their answers
        journalled = len(journal_lines(out))
        assert len(journal_lines(out, "judge:ultrafeedback")) == 3 and not (out / "build.json").exists()
        before = proxy.calls  # counted on arrival: the killed run's in-flight ones are already in
        assert main(["run", str(path), "--out", str(out)]) == 0
        resent = proxy.calls - before
    total = 8 * 2 + 8 * 2  # 8 prompts x (2 completions + 2 aspects)
    assert resent == total - journalled, f"re-run sent {resent}, {total - journalled} were not journalled"
    assert_journalled_once(out, total)
    rows = uf_rows(out)
    assert len(rows) == 8 and all(len(r["completions"]) == 2 for r in rows)
    assert all(set(c["annotations"]) == {"helpfulness", "honesty"} for r in rows for c in r["completions"])
