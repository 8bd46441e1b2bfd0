"""The vLLM server wrapper: a failed start-up quotes the server log; the default model is materialised once."""

from __future__ import annotations

import pytest

from serving.errors import EndpointError, ModelError
from serving.models import default_model_dir, materialize_default_model, resolve_model
from serving.vllm import VllmServer
from tests.helpers import free_port


def test_failed_start_quotes_the_log_tail(tmp_path):
    bad = tmp_path / "broken-model"
    bad.mkdir()
    (bad / "config.json").write_text('{"architectures": ["NoSuchArchitecture"], "model_type": "nonsense"}')
    server = VllmServer(str(bad), port=free_port(), log_path=tmp_path / "vllm.log", startup_timeout=300)
    with pytest.raises(EndpointError) as err:
        server.start()
    msg = str(err.value)
    assert "exited with code" in msg and str(tmp_path / "vllm.log") in msg
    assert len(msg.splitlines()) > 1  # the tail of the log is quoted
    assert server.proc is not None and server.proc.poll() is not None  # nothing left running


def test_default_model_is_materialised_once():
    path = materialize_default_model()
    assert (path / "config.json").exists() and path == default_model_dir()
    stamp = (path / "model.safetensors").stat().st_mtime_ns
    assert resolve_model(None) == str(path)
    assert (path / "model.safetensors").stat().st_mtime_ns == stamp  # the marker: no second conversion


def test_model_names(tmp_path):
    assert resolve_model("org/some-model") == "org/some-model"  # a hub id passes through (online use)
    with pytest.raises(ModelError, match="does not exist"):
        resolve_model(str(tmp_path / "missing"))
    (tmp_path / "f").write_text("x")
    with pytest.raises(ModelError, match="not a model folder"):
        resolve_model(str(tmp_path / "f"))


def test_serve_with_enable_lora_starts_a_server_that_takes_adapters(monkeypatch, capsys):
    """`rlaif serve --enable-lora`: the server LoRA rounds can load adapters into (flags + runtime env)."""
    from flows.cli import main
    from serving.lora import RUNTIME_ENV
    from serving.vllm import VllmServer

    made = {}

    class Reused(VllmServer):
        def __enter__(self) -> VllmServer:
            made["server"], self.reused = self, True
            return self

        def __exit__(self, *exc: object) -> None:
            pass

    monkeypatch.setattr("serving.vllm.VllmServer", Reused)
    assert main(["serve", "--enable-lora", "--max-lora-rank", "8", "--port", "8799"]) == 0
    server = made["server"]
    cmd = server.command("/models/x")
    assert cmd[cmd.index("--max-lora-rank") + 1] == "8" and "--enable-lora" in cmd
    assert server.lora.env() == {RUNTIME_ENV: "True"}
    assert main(["serve", "--port", "8799"]) == 0  # without the flag: a plain server
    assert "--enable-lora" not in made["server"].command("/models/x")
