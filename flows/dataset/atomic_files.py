"""Atomic files: a shard is written to a temp file and renamed, so a partial shard never exists."""

from __future__ import annotations

import json
import os
import tempfile
from pathlib import Path
from typing import Any

from serving.atomic_write import atomic_write_text

__all__ = ["atomic_write_text", "check_writable", "read_json", "write_json"]


def write_json(path: Path, data: Any) -> Path:
    return atomic_write_text(path, json.dumps(data, ensure_ascii=False, indent=None))


def read_json(path: Path) -> Any:
    return json.loads(Path(path).read_text())


def check_writable(folder: Path) -> None:
    """Fail before any model call when the output folder cannot be written (creates nothing)."""
    from serving.errors import ConfigError

    target = folder.expanduser().absolute()
    existing = next((p for p in (target, *target.parents) if p.exists()), None)
    if existing is None or not existing.is_dir():
        raise ConfigError(f"output folder {folder} is not writable: {existing} is not a folder (set --out)")
    try:  # a probe file in the nearest existing folder (os.access says yes to root on read-only mounts)
        fd, tmp = tempfile.mkstemp(prefix=".write-check-", dir=existing)
        os.close(fd)
        os.unlink(tmp)
    except OSError as exc:
        raise ConfigError(
            f"output folder {folder} is not writable: {exc.strerror} on {existing} (set --out)"
        ) from None
