"""Skip a training the run already did: the model folder keeps the key it was trained under (method,
fields, the build's dataset fingerprint, the base model's files, the trainer libraries' versions)."""

from __future__ import annotations

import hashlib
import json
from importlib import metadata
from pathlib import Path
from typing import Any

from flows.dataset.atomic_files import read_json, write_json

MARK = "trained_key.json"  # in the model folder, written once the trainer has put the folder in place
LIBS = ("trl", "transformers", "torch", "peft")
NOT_INPUTS = ("dataset", "output")  # folders in `fields` that are not models the training starts from


def _files(folder: str | None) -> list[list[Any]]:
    """A local model folder's top-level files as (name, size, mtime): a changed model changes the key."""
    if not folder or not Path(folder).is_dir():
        return []
    return [
        [p.name, p.stat().st_size, p.stat().st_mtime_ns]
        for p in sorted(Path(folder).iterdir())
        if p.is_file()
    ]


def _version(lib: str) -> str | None:
    try:
        return metadata.version(lib)
    except metadata.PackageNotFoundError:
        return None


def train_key(method: str, fields: dict[str, Any]) -> str | None:
    """The key of one training; None (always train) when the dataset has no build fingerprint."""
    from trainers.common import model_path

    build = Path(fields["dataset"]) / "build.json"
    if not build.is_file():
        return None
    try:
        base = model_path(str(fields["model"]))
    except Exception:  # noqa: BLE001 - an unreadable model: the trainer says why, in one line
        return None
    data = {
        "method": method, "fields": fields, "dataset": read_json(build).get("fingerprint"),
        "files": {"model": _files(base), **{k: _files(v) for k, v in fields.items() if k not in NOT_INPUTS
                                             and isinstance(v, str) and Path(v).is_dir()}},  # an adapter, a reward model
        "libs": {lib: _version(lib) for lib in LIBS},
    }  # fmt: skip
    return hashlib.sha256(json.dumps(data, sort_keys=True, default=str).encode()).hexdigest()[:16]


def trained_before(output: str, key: str | None) -> bool:
    """The folder holds a finished training under this key (its metrics.json too)."""
    folder = Path(output)
    if key is None or not (folder / MARK).is_file() or not (folder / "metrics.json").is_file():
        return False
    try:
        return read_json(folder / MARK).get("key") == key
    except (OSError, ValueError):
        return False


def mark_trained(output: str, key: str | None) -> None:
    if key is not None:
        write_json(Path(output) / MARK, {"key": key})
