"""Test session set-up: one real vLLM server (bundled SmolLM2) for the whole session."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

_PREFECT_HOME = tempfile.mkdtemp(prefix="rlaif-test-prefect-")
os.environ.setdefault("PREFECT_HOME", _PREFECT_HOME)
os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "600")  # busy CI machines
os.environ.setdefault("HF_HUB_OFFLINE", "1")
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
# pytest's stderr is not a terminal: without this every run would write `rlaif: progress` lines there,
# and tests check that a failure is one line; tests/test_progress_log.py turns them on
os.environ.setdefault("RLAIF_PROGRESS_EVERY", "0")

TEST_PORT = int(os.environ.get("RLAIF_TEST_PORT", "8765"))


@pytest.fixture(scope="session")
def vllm_server():
    """The real server; reused when one already serves the bundled model on the test port."""
    from serving.vllm import VllmServer

    server = VllmServer(None, port=TEST_PORT)
    server.start()  # raises with the log tail if vLLM cannot start: the run fails, never skips
    yield server
    server.stop()


@pytest.fixture(scope="session")
def policy_endpoint(vllm_server):
    from serving.endpoint import Endpoint

    return Endpoint(base_url=vllm_server.base_url, model=vllm_server.model_name, max_concurrency=32)


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory) -> Path:
    from tests.helpers import make_tiny_model

    return make_tiny_model(tmp_path_factory.mktemp("tiny-model"))


@pytest.fixture(scope="session")
def arith_dataset(tmp_path_factory) -> Path:
    from tests.helpers import synthetic_build

    return synthetic_build(tmp_path_factory.mktemp("arith"))
