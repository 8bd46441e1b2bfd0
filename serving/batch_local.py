"""The same batch JSONL through vLLM's own batch runner for a local model (`run_batch`: the engine
in-process, no HTTP server), with the engine settings `VllmServer` uses; answers read back by custom_id."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path
from typing import Any

from serving.batch import LineError, batch_line, read_output
from serving.endpoint import ChatResult
from serving.errors import EndpointError
from serving.models import resolve_model
from serving.vllm import VllmServer

SERVER_ONLY = {"--host", "--port"}  # the HTTP server's address (run_batch reads them as its metrics port)


def run_batch_command(model: str | None, name: str | None, input_path: Path, output_path: Path,
                      max_model_len: int = 2048) -> list[str]:  # fmt: skip
    """`python -m vllm.entrypoints.openai.run_batch -i IN -o OUT` with the engine arguments the local
    server gets (model folder, served name, dtype, block size, no chunked prefill on CPU, ...)."""
    server = VllmServer(model, max_model_len=max_model_len, name=name)
    cmd = server.command(resolve_model(model))
    out: list[str] = []
    skip = False
    for arg in cmd:
        if skip:
            skip = False
        elif arg in SERVER_ONLY:
            skip = True
        else:
            out.append(
                "vllm.entrypoints.openai.run_batch" if arg == "vllm.entrypoints.openai.api_server" else arg
            )
    return [*out, "-i", str(input_path), "-o", str(output_path)]


def run_local_batch(requests: list[tuple[str, dict[str, Any]]], work: Path, model: str | None = None,
                    name: str | None = None, log_path: Path | None = None,
                    timeout_s: float = 3600.0) -> dict[str, ChatResult | LineError]:  # fmt: skip
    """Run `(custom_id, body)` requests (bodies with "model": the served name) through `run_batch`; the
    model loads, answers every line, and exits. Its log goes to `log_path` (default WORK/run_batch.log)."""
    work.mkdir(parents=True, exist_ok=True)
    inp, outp = work / "batch-input.jsonl", work / "batch-output.jsonl"
    inp.write_bytes(b"".join(batch_line(cid, body) for cid, body in requests))
    log_path = log_path or work / "run_batch.log"
    env = dict(os.environ)
    for key, value in (("VLLM_CPU_KVCACHE_SPACE", "2"), ("HF_HUB_OFFLINE", "1"), ("VLLM_NO_USAGE_STATS", "1"),
                       ("DO_NOT_TRACK", "1")):  # fmt: skip
        env.setdefault(key, value)  # as `VllmServer` starts its server
    with open(log_path, "wb") as log:
        proc = subprocess.run(run_batch_command(model, name, inp, outp), stdout=log, stderr=subprocess.STDOUT,
                              env=env, timeout=timeout_s, check=False)  # fmt: skip
    if proc.returncode != 0 or not outp.exists():
        raise EndpointError(f"vLLM run_batch exited with code {proc.returncode} (log {log_path})")
    return read_output(outp.read_text(), "run_batch")
