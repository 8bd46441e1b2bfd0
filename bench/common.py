"""Shared bench helpers: real prompts (MT-bench from ../shared/data when present), the local server."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("RLAIF_PROGRESS", "0")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")

MT_BENCH = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"


def bench_prompts(n: int):  # noqa: ANN201 - list[PromptRow]
    from flows.dataset.prompts import load_prompts

    if MT_BENCH.exists():
        return load_prompts(str(MT_BENCH), column="turns", limit=n).rows
    return load_prompts("default", limit=n).rows


def warm_prefect() -> None:
    """Start Prefect's temporary server once, so flow timings measure the flow, not server boot."""
    from prefect import flow

    @flow(name="rlaif-bench-warmup")
    def warm() -> int:
        return 1

    warm()


def loadavg() -> str:
    """The machine's 1/5/15-minute load averages, to print beside a bench's figures (2 cores here)."""
    one, five, fifteen = os.getloadavg()
    return f"load average {one:.2f} / {five:.2f} / {fifteen:.2f} on {os.cpu_count()} CPUs"


class LoadSampler:
    """Mean and peak 1-minute load average over a block (sampled every `every` seconds in a thread):
    other work on the machine slows a side of a bench, and this says how much there was."""

    def __init__(self, every: float = 5.0) -> None:
        import threading

        self.every, self.samples = every, [os.getloadavg()[0]]
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.wait(self.every):
            self.samples.append(os.getloadavg()[0])

    def __enter__(self) -> LoadSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._stop.set()
        self._thread.join()
        self.samples.append(os.getloadavg()[0])

    def line(self) -> str:
        mean = sum(self.samples) / len(self.samples)
        return f"1-min load mean {mean:.2f}, peak {max(self.samples):.2f} on {os.cpu_count()} CPUs"


def fresh_server(port: int):  # noqa: ANN201 - VllmServer
    """A vLLM server of the bundled model started for this bench alone, so its prefix cache is empty.
    `VllmServer` would reuse a server already on the port (a test session's, an earlier bench's), whose
    cache and other clients would skew the figures: refuse that with one line instead."""
    from serving.vllm import VllmServer, server_models

    if server_models(f"http://127.0.0.1:{port}/v1") is not None:
        raise SystemExit(f"port {port}: a server already answers there; stop it or pass another --port")
    return VllmServer(None, port=port)
