"""Per-shard request journal: one JSONL line per finished request, appended before it counts.

JSONL because a line is one `write` (no lock, no transaction, readable with `head`), a torn last line
from a kill -9 is detected and cut on reopen, and reading a whole shard's journal is one pass.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any


class Journal:
    """Append-only `key -> record` store for one shard. Use it from one thread (the io loop)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.done: dict[str, dict[str, Any]] = {}
        path.parent.mkdir(parents=True, exist_ok=True)
        good = 0
        if path.exists():
            data = path.read_bytes()
            good = data.rfind(b"\n") + 1  # a torn tail (killed mid-write) is cut below
            for line in data[:good].splitlines():
                try:
                    rec = json.loads(line)
                except ValueError:
                    continue
                self.done.setdefault(rec["k"], rec)  # first record wins: never counted twice
        self._f = open(path, "ab")  # noqa: SIM115 - kept open for the shard's lifetime
        if self._f.tell() != good:
            self._f.truncate(good)
            self._f.seek(good)
        self.loaded = len(self.done)

    def get(self, key: str) -> dict[str, Any] | None:
        return self.done.get(key)

    def append(self, record: dict[str, Any]) -> None:
        """Write the record (it must carry its key in "k") and flush it to the OS."""
        if record["k"] in self.done:
            return
        self._f.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")).encode() + b"\n")
        self._f.flush()
        self.done[record["k"]] = record

    def close(self) -> None:
        if not self._f.closed:
            self._f.flush()
            os.fsync(self._f.fileno())
            self._f.close()

    def __enter__(self) -> Journal:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
