"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

MT_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench_questions.jsonl"


def metric(server, name: str) -> float:
    """Sum of a Prometheus counter on the vLLM server (e.g. vllm:request_success_total)."""
    import httpx

    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path
