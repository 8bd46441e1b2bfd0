"""Crash and resume: a server that goes away, SIGINT mid-run, 429 storms, garbage judge answers."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

from flows.cli import main
from tests.helpers import journal_records, uf_rows, write_jsonl
from tests.stubs import FaultProxy, chat_body

PROMPTS = [{"prompt": f"Write one short sentence about the number {i}."} for i in range(8)]


def keys_of(out: Path) -> list[tuple[str, int]]:
    return [(r["prompt_id"], c["sample_index"]) for r in uf_rows(out) for c in r["completions"]]


def recipe(tmp_path: Path, endpoint_block: str, extra: str = "") -> Path:
    data = write_jsonl(tmp_path / "p.jsonl", PROMPTS)
    p = tmp_path / "r.yaml"
    p.write_text(f"name: rel\nprompts:\n  path: {data}\npolicy:\n{endpoint_block}sampling:\n  n: 2\n"
                 f"  max_tokens: 24\nshard_size: 2\nclient:\n  max_retries: 1\n  backoff_base_s: 0.05\n{extra}")  # fmt: skip
    return p


def test_server_dies_mid_generate_then_resume_exactly_once(vllm_server, tmp_path, capsys):
    proxy = FaultProxy(vllm_server.base_url).start()
    block = (f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
             "      max_concurrency: 2\n")  # fmt: skip
    path, out = recipe(tmp_path, block), tmp_path / "out"

    def killer() -> None:  # the "server" goes away once a few answers are journalled
        while len(journal_records(out)) < 3:
            time.sleep(0.02)
        proxy.stop()

    t = threading.Thread(target=killer)
    t.start()
    code = main(["generate", str(path), "--out", str(out)])
    t.join()
    err = capsys.readouterr().err
    assert code == 2 and proxy.base_url in err
    finished = len(journal_records(out))
    assert 3 <= finished < 16 and not (out / "build.json").exists()

    proxy.start()  # the server is back, same URL
    before = proxy.forwarded
    assert main(["generate", str(path), "--out", str(out)]) == 0
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == 16  # nothing lost, nothing duplicated
    assert proxy.forwarded - before == 16 - finished  # journalled requests were not sent again
    assert len({r["k"] for r in journal_records(out)}) == len(journal_records(out)) == 16
    proxy.stop()


def test_sigint_leaves_no_partial_shard_and_rerun_completes(vllm_server, tmp_path):
    """SIGINT while requests are in flight. The proxy holds every request after the second, so the
    signal always lands mid-run (straight to vLLM, all 16 answers can arrive within one poll)."""
    release = threading.Event()

    def hold(req: dict, n: int) -> None:
        if n > 2:
            release.wait(120)

    with FaultProxy(vllm_server.base_url, hold) as proxy:
        block = f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
        path, out = recipe(tmp_path, block), tmp_path / "out"
        env = {**os.environ, "RLAIF_PROGRESS": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "generate", str(path), "--out", str(out)],
                                env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
        deadline = time.monotonic() + 300
        while len(journal_records(out)) < 2 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert proxy.calls > 2  # requests were in flight (held) when the signal came
        proc.send_signal(signal.SIGINT)
        _, err = proc.communicate(timeout=120)  # exits with requests still held: they are cancelled
        release.set()
        assert proc.returncode == 130, err[-2000:]
        assert "rlaif: interrupted" in err and "Traceback" not in err, err[-2000:]
        assert len(journal_records(out)) == 2
        assert not (out / "build.json").exists()  # nothing that looks finished
        for res in out.glob("shards/*/result-*.json"):  # a shard that looks finished is complete
            assert json.loads(res.read_text())["completions"] == 4
        assert main(["generate", str(path), "--out", str(out)]) == 0
    keys = keys_of(out)
    assert len(keys) == len(set(keys)) == 16


def test_429_storm_and_garbage_judge_complete_and_are_counted(vllm_server, tmp_path):
    def fault(req: dict, n: int):
        if n % 3 == 0:
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
    """kill -9 of `rlaif run` while judging; the re-run sends exactly what was not journalled."""
    with FaultProxy(vllm_server.base_url) as proxy:
        block = f"  endpoints:\n    - base_url: {proxy.base_url}\n      model: {vllm_server.model_name}\n"
        extra = "judges:\n  - type: ultrafeedback\n    aspects: [helpfulness, honesty]\n    max_tokens: 96\n"
        path, out = recipe(tmp_path, block, extra), tmp_path / "out"
        env = {**os.environ, "RLAIF_PROGRESS": "0"}
        proc = subprocess.Popen([sys.executable, "-m", "flows.cli", "run", str(path), "--out", str(out)], env=env,
                                stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        deadline = time.monotonic() + 400
        while len(journal_records(out, "judge:ultrafeedback")) < 3 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=60)
        journalled = len(journal_records(out))
        assert journal_records(out, "judge:ultrafeedback") and not (out / "build.json").exists()
        before = proxy.calls  # counted on arrival: the killed run's in-flight ones are already in
        assert main(["run", str(path), "--out", str(out)]) == 0
        resent = proxy.calls - before
    total = 8 * 2 + 8 * 2  # 8 prompts x (2 completions + 2 aspects)
    recs = journal_records(out)
    assert len(recs) == len({r["k"] for r in recs}) == total  # every request recorded exactly once
    assert resent == total - journalled  # journalled requests were never sent again
    rows = uf_rows(out)
    assert len(rows) == 8 and all(len(r["completions"]) == 2 for r in rows)
    assert all(set(c["annotations"]) == {"helpfulness", "honesty"} for r in rows for c in r["completions"])
