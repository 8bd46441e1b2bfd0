"""Operations: Dask task runner, scheduled deployments on a local Prefect server, artifacts, secrets."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

from flows.cli import main
from tests.helpers import free_port, uf_rows, write_jsonl
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
    try:
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/api/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                time.sleep(1)
        served = subprocess.Popen(
            [sys.executable, "-m", "flows.cli", "schedule", str(recipe), "--interval", "10", "--name", "sched-test"],
            env=env, cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True,
        )  # fmt: skip
        completed = []
        deadline = time.monotonic() + 240
        while time.monotonic() < deadline and not completed:
            time.sleep(3)
            r = httpx.post(f"http://127.0.0.1:{port}/api/flow_runs/filter",
                           json={"deployments": {"name": {"any_": ["sched-test"]}}}, timeout=10)  # fmt: skip
            if r.status_code == 200:
                completed = [fr for fr in r.json() if fr["state"]["type"] == "COMPLETED"]
        assert completed, "no scheduled flow run reached Completed within 4 minutes"
        runs = sorted((tmp_path / "runs").glob("*"))
        assert runs and (runs[0] / "summary.json").exists()  # a dated folder per scheduled run
    finally:
        for p in (served, server):
            if p is not None:
                try:
                    os.killpg(p.pid, 15)
                    p.wait(timeout=30)
                except (ProcessLookupError, subprocess.TimeoutExpired):
                    os.killpg(p.pid, 9)
