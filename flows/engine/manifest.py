"""Prompts by reference: the prompt set is normalised once into Parquet shards under the run folder,
and flows and tasks pass the small manifest (paths + content hashes), never the rows."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from flows.dataset.atomic_files import read_json, write_json
from flows.dataset.prompts import PromptRow

PROMPT_SCHEMA = pa.schema([
    ("prompt_id", pa.string()), ("prompt", pa.string()),
    ("messages", pa.list_(pa.struct([("role", pa.string()), ("content", pa.string())]))),
    ("source", pa.string()),
    ("columns", pa.string()),  # JSON: the prompt set's columns that judges read (`Judge.columns`)
])  # fmt: skip


class ShardRef(BaseModel):
    """One shard of prompts: its index, Parquet file and the sha256 of its content."""

    index: int
    path: str
    sha256: str
    prompts: int

    @property
    def name(self) -> str:
        return f"{self.index:05d}-{self.sha256[:12]}"


class Manifest(BaseModel):
    path: str
    sha256: str = ""
    source: str = ""
    prompts: int = 0
    shard_size: int = 256
    shards: list[ShardRef] = Field(default_factory=list)
    skipped: dict[str, int] = Field(default_factory=dict)
    read: int = 0  # input rows looked at (before `limit` stopped the reading): prompts + skipped
    notes: dict[str, int] = Field(default_factory=dict)  # counted, nothing lost (e.g. turns_unused)


def _chunks(rows: Iterator[PromptRow], size: int) -> Iterator[list[PromptRow]]:
    chunk: list[PromptRow] = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def shard_sha(rows: list[PromptRow]) -> str:
    h = hashlib.sha256()
    for r in rows:
        key = [r.prompt_id, r.messages, r.source] + ([r.columns] if r.columns else [])
        h.update(json.dumps(key, ensure_ascii=False, default=str).encode())
    return h.hexdigest()


def write_manifest(rows: Iterator[PromptRow], skipped: dict[str, int], run_dir: Path, shard_size: int,
                   source: str, notes: dict[str, int] | None = None) -> Manifest:  # fmt: skip
    """Stream prompts into `run_dir/prompts/shard-*.parquet` (a shard whose content is unchanged is not
    rewritten) and write `manifest.json`. Memory: one shard at a time."""
    folder = run_dir / "prompts"
    man = Manifest(path=str(folder / "manifest.json"), source=source, shard_size=shard_size)
    old = {}
    if (folder / "manifest.json").exists():
        try:
            old = {s["path"]: s["sha256"] for s in read_json(folder / "manifest.json")["shards"]}
        except (ValueError, KeyError):
            old = {}
    total = hashlib.sha256()
    for i, chunk in enumerate(_chunks(rows, shard_size)):
        folder.mkdir(parents=True, exist_ok=True)  # only once the first shard of prompts read cleanly
        sha = shard_sha(chunk)
        path = folder / f"shard-{i:05d}.parquet"
        if old.get(str(path)) != sha or not path.exists():
            tmp = path.with_suffix(".tmp")
            table = pa.Table.from_pylist(
                [{**r.model_dump(), "columns": json.dumps(r.columns, default=str) if r.columns else None}
                 for r in chunk], schema=PROMPT_SCHEMA)  # fmt: skip
            pq.write_table(table, tmp)
            tmp.replace(path)
        man.shards.append(ShardRef(index=i, path=str(path), sha256=sha, prompts=len(chunk)))
        man.prompts += len(chunk)
        total.update(sha.encode())
    man.skipped = dict(skipped)  # filled while the iterator ran
    man.notes = {k: v for k, v in (notes or {}).items() if k != "read"}
    man.read = (notes or {}).get("read", man.prompts + sum(man.skipped.values()))
    man.sha256 = total.hexdigest()
    folder.mkdir(parents=True, exist_ok=True)
    write_json(Path(man.path), man.model_dump())
    return man


def read_shard(ref: ShardRef) -> list[PromptRow]:
    table = pq.read_table(ref.path)  # shards written before `columns` existed have no such column
    return [PromptRow.model_construct(**{**r, "columns": json.loads(r.get("columns") or "{}")})
            for r in table.to_pylist()]  # fmt: skip
