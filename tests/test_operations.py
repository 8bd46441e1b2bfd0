"""Operations: Dask task runner, scheduled deployments on a local Prefect server, artifacts, secrets."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path
from typing import Any

import httpx

from flows.cli import main
from tests.helpers import free_port, uf_rows, wait_for, write_jsonl
from tests.stubs import FaultProxy

ROOT = Path(__file__).resolve().parents[1]


def test_dask_runner_gives_the_same_datasets(vllm_server, tmp_path):
    """Two Dask worker processes send the same requests and build the same datasets as the thread
    runner. The real server answers each request once (through a recording proxy): a CPU server's
    numerics depend on batch composition, so a second answer to the same seeded request can differ."""
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Count to {i}."} for i in range(5)])
    proxy = FaultProxy(vllm_server.base_url, memo=True).start()

    def run(runner: str) -> Path:
        recipe = tmp_path / f"{runner}.yaml"
        recipe.write_text(f"name: ops-{runner}\nprompts:\n  path: {data}\npolicy:\n  endpoints: [{{base_url: "
                          f"{proxy.base_url}, model: {vllm_server.model_name}}}]\n"
                          "sampling:\n  n: 2\n  max_tokens: 12\nshard_size: 2\njudges:\n  - type: pairwise\n"
                          f"    max_tokens: 32\ntask_runner: {runner}\ndask_workers: 2\n")  # fmt: skip
        out = tmp_path / runner
        assert main(["run", str(recipe), "--out", str(out)]) == 0
        return out

    try:
        threads = run("threads")
        forwarded = proxy.forwarded
        dask = run("dask")
    finally:
        proxy.stop()
    assert json.loads((dask / "summary.json").read_text())["engine"]["task_runner"] == "dask"
    assert forwarded > 0 and proxy.forwarded == forwarded  # the Dask run asked nothing new
    assert proxy.memo_hits == forwarded  # ... and asked every request the thread run asked

    def rows(out: Path) -> list:
        out_rows = uf_rows(out)
        for r in out_rows:
            r.pop("provenance")
        return sorted(out_rows, key=lambda r: r["prompt_id"])

    assert len(rows(dask)) == 5 and rows(dask) == rows(threads)
    import pyarrow.parquet as pq

    for split in ("train_prefs", "test_prefs"):
        a, b = (
            pq.read_table(o / "parquet" / "binarized" / f"{split}.parquet").to_pylist()
            for o in (threads, dask)
        )
        assert sorted(map(str, a)) == sorted(map(str, b))


def test_artifacts_and_summary_without_secrets(vllm_server, tmp_path, monkeypatch, capsys):
    secret = "sk-rlaif-test-secret-123"
    monkeypatch.setenv("RLAIF_TEST_JUDGE_KEY", secret)
    with FaultProxy(vllm_server.base_url) as judge:
        data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hi."}, {"prompt": "Say bye."}])
        recipe = tmp_path / "r.yaml"
        recipe.write_text(f"name: ops-artifacts\nprompts:\n  path: {data}\npolicy:\n  port: {vllm_server.port}\n"
                          "sampling:\n  n: 2\n  max_tokens: 12\njudges:\n  - type: ultrafeedback\n    judge:\n"
                          f"      endpoints:\n        - base_url: {judge.base_url}\n"
                          f"          model: {vllm_server.model_name}\n"
                          "          api_key_env: RLAIF_TEST_JUDGE_KEY\n")  # fmt: skip
        out = tmp_path / "out"
        assert main(["run", str(recipe), "--out", str(out)]) == 0
    captured = capsys.readouterr()
    assert secret not in captured.out + captured.err
    for f in out.rglob("*"):
        if f.is_file() and f.suffix in (".json", ".md", ".txt", ".yaml"):
            assert secret not in f.read_text(errors="ignore"), f
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["generate"]["rows"] == 4

    from prefect.client.orchestration import get_client
    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterKey

    with get_client(sync_client=True) as client:
        arts = client.read_artifacts(
            artifact_filter=ArtifactFilter(key=ArtifactFilterKey(like_="rlaif-ops-artifacts"))
        )
    kinds = {a.type for a in arts}
    assert {"markdown", "table"} <= kinds
    md = next(a for a in arts if a.type == "markdown")
    assert "generate" in md.data and secret not in md.data


def test_scheduled_deployment_run_completes(vllm_server, tmp_path):
    port = free_port()
    home = tmp_path / "prefect-home"
    env = {**os.environ, "PREFECT_HOME": str(home), "PREFECT_API_URL": f"http://127.0.0.1:{port}/api",
           "PREFECT_SERVER_API_PORT": str(port), "PREFECT_SERVER_API_HOST": "127.0.0.1",
           "PREFECT_API_SERVICES_SCHEDULER_LOOP_SECONDS": "2", "PREFECT_RUNNER_POLL_FREQUENCY": "2",
           "PREFECT_SERVER_ANALYTICS_ENABLED": "false", "PREFECT_SERVER_UI_ENABLED": "false",
           "RLAIF_PROGRESS": "0"}  # fmt: skip
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say ok."}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"name: sched\nprompts:\n  path: {data}\npolicy:\n  port: {vllm_server.port}\n"
                      f"sampling:\n  n: 1\n  max_tokens: 8\noutput: {tmp_path}/runs\n")  # fmt: skip
    prefect_bin = str(Path(sys.executable).parent / "prefect")
    server = subprocess.Popen([prefect_bin, "server", "start", "--host", "127.0.0.1", "--port", str(port)],
                              env=env, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
    served = None
    base = f"http://127.0.0.1:{port}/api"

    def health() -> bool:
        assert server.poll() is None, f"prefect server start exited with code {server.returncode}"
        return api_answers(base, "GET", "/health") is not None

    try:
        wait_for(health, 600, f"the Prefect server at {base}", interval_s=1)
        served = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "schedule", str(recipe), "--interval", "10", "--name", "sched-test"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        states: dict[str, str] = {}

        def completed() -> bool:  # a slow or failed poll is only a missed look: the deadline decides
            assert served.poll() is None, f"rlaif schedule exited with code {served.returncode}"
            runs = api_answers(base, "POST", "/flow_runs/filter",
                               json={"deployments": {"name": {"any_": ["sched-test"]}}})  # fmt: skip
            states.update({fr["name"]: fr["state"]["type"] for fr in runs or [] if fr.get("state")})
            return "COMPLETED" in states.values()

        wait_for(completed, 600, lambda: f"a scheduled flow run to reach Completed (runs: {states})", 3)
        runs = sorted((tmp_path / "runs").glob("*"))
        assert any((r / "summary.json").exists() for r in runs), runs  # a dated folder per scheduled run
    finally:
        for p in (served, server):
            if p is not None:
                stop_group(p)


def api_answers(base: str, method: str, path: str, **kwargs: Any) -> Any:
    """The JSON of a 200 answer from the Prefect API, or None on any transient trouble (a timeout, a
    refused connection, a 5xx while the server is busy): callers poll until a generous deadline."""
    try:
        r = httpx.request(method, base + path, timeout=30, **kwargs)
        return r.json() if r.status_code == 200 else None
    except (httpx.HTTPError, ValueError):
        return None


def stop_group(p: subprocess.Popen) -> None:
    """SIGTERM the process group, SIGKILL it if it lingers; a group already gone is fine."""
    for sig in (signal.SIGTERM, signal.SIGKILL):
        try:
            os.killpg(p.pid, sig)
        except ProcessLookupError:
            break
        try:
            p.wait(timeout=60)
            break
        except subprocess.TimeoutExpired:
            continue
    if p.poll() is None:
        p.wait(timeout=60)
