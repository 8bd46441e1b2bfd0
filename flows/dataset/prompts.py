"""Read prompts from JSONL / Parquet / CSV / a `datasets` folder (always through `datasets`).

Empty, over-long and duplicate prompts are skipped and counted, never a crash.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from judges.contract import Prompt
from serving.errors import DataError

REPO_ROOT = Path(__file__).resolve().parents[2]
BUNDLED_PROMPTS = REPO_ROOT / "recipes" / "prompts" / "default.jsonl"


PromptRow = Prompt  # one prompt as every stage sees it (judges/contract.py)


class PromptSet(BaseModel):
    rows: list[PromptRow]
    skipped: dict[str, int] = Field(default_factory=dict)  # reason -> count
    path: str = ""


def prompt_id_for(text: str) -> str:
    """sha256 of the normalised prompt text (whitespace collapsed, stripped)."""
    return hashlib.sha256(" ".join(text.split()).encode()).hexdigest()


def conversation_id(messages: list[dict[str, str]]) -> str:
    """The id of what the policy sees: a lone user message keeps its text's id (`prompt_id_for`); any
    other conversation hashes every turn's role and normalised content, so chats that differ only in
    the system prompt or in earlier turns never collapse into one prompt."""
    if len(messages) == 1 and messages[0]["role"] == "user":
        return prompt_id_for(messages[0]["content"])
    turns = [[m["role"], " ".join(m["content"].split())] for m in messages]
    return hashlib.sha256(json.dumps(turns, ensure_ascii=False).encode()).hexdigest()


def resolve_path(path: str, base: Path | None = None) -> Path:
    if path == "default":
        return BUNDLED_PROMPTS
    p = Path(path).expanduser()
    if p.is_absolute() or p.exists() or base is None:
        return p
    return base / p


def _load_dataset(path: Path, split: str) -> Any:
    import datasets

    datasets.disable_progress_bars()
    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(f"{path}: not a `datasets` folder ({exc})") from None
        if isinstance(ds, datasets.DatasetDict):
            if split not in ds:
                raise DataError(f"{path}: no split {split!r} (has {list(ds)}); set prompts.split")
            ds = ds[split]
        return ds
    suffix = path.suffix.lower()
    builder = {".jsonl": "json", ".json": "json", ".parquet": "parquet", ".csv": "csv"}.get(suffix)
    if builder is None:
        raise DataError(f"{path}: unsupported prompts format {suffix!r} (jsonl, parquet, csv, folder)")
    try:
        return datasets.load_dataset(builder, data_files=str(path), split="train")
    except Exception as exc:  # datasets raises many types for a bad file
        raise DataError(f"{path}: cannot read prompts: {str(exc).splitlines()[0][:200]}") from None


def _to_text(
    value: Any, column: str, notes: dict[str, int] | None = None
) -> tuple[str, list[dict[str, str]]]:
    """(the last user turn, the conversation the policy sees). A list of strings (MT-bench `turns`)
    uses its first turn only: the turns left out are counted in `notes["turns_unused"]`."""
    if value is None:
        return "", []
    if isinstance(value, str):
        return value.strip(), [{"role": "user", "content": value.strip()}]
    if isinstance(value, list) and value and isinstance(value[0], dict):  # messages
        msgs = [{"role": str(m["role"]), "content": str(m["content"])} for m in value]
        users = [m["content"] for m in msgs if m["role"] == "user"]
        return (users[-1].strip() if users else ""), msgs
    if isinstance(value, list):  # e.g. MT-bench "turns": the first turn is the prompt
        if notes is not None and len(value) > 1:
            notes["turns_unused"] = notes.get("turns_unused", 0) + len(value) - 1
            notes["prompts_with_unused_turns"] = notes.get("prompts_with_unused_turns", 0) + 1
        return _to_text(value[0] if value else None, column)
    raise DataError(f"column {column!r} holds {type(value).__name__}, expected text or messages")


def iter_prompts(
    path: str,
    column: str = "prompt",
    id_column: str | None = None,
    split: str = "train",
    limit: int | None = None,
    max_prompt_chars: int = 8000,
    base: Path | None = None,
    skipped: dict[str, int] | None = None,
    notes: dict[str, int] | None = None,
    columns: list[str] | None = None,
) -> Iterator[PromptRow]:
    """Stream normalised prompts (bounded memory); empty/too long/duplicate ones are counted in
    `skipped`; `notes` counts rows read (`read`) and turns left unused. Raises DataError naming the
    file/column on bad input (before the first row)."""
    p = resolve_path(path, base)
    if not p.exists():
        if path.count("/") == 1 and not Path(path).suffix:
            raise DataError(f"prompts {path!r}: not a local file; hub datasets need network access")
        raise DataError(f"{p}: prompts file does not exist (prompts.path in the recipe)")
    ds = _load_dataset(p, split)
    if column not in ds.column_names:
        raise DataError(f"{p}: no column {column!r} (columns: {ds.column_names}); set prompts.column")
    if id_column and id_column not in ds.column_names:
        raise DataError(f"{p}: no id column {id_column!r} (columns: {ds.column_names})")
    for extra in columns or []:
        if extra not in ds.column_names:
            raise DataError(f"{p}: no column {extra!r}, which a judge of the recipe reads (columns: "
                            f"{ds.column_names}); add it to the prompt set or change the judge")  # fmt: skip
    return _rows(ds, p, column, id_column, limit, max_prompt_chars, {} if skipped is None else skipped,
                 {} if notes is None else notes, columns or [])  # fmt: skip


def _rows(ds: Any, p: Path, column: str, id_column: str | None, limit: int | None, max_chars: int,
          skipped: dict[str, int], notes: dict[str, int], extra: list[str]) -> Iterator[PromptRow]:  # fmt: skip
    seen: set[str] = set()
    wanted = [c for c in {column, id_column, "source", "category", *extra} if c and c in ds.column_names]
    n = 0
    for batch in ds.select_columns(wanted).iter(batch_size=1024):
        for k in range(len(batch[column])):
            if limit is not None and n >= limit:
                return
            notes["read"] = notes.get("read", 0) + 1
            text, messages = _to_text(batch[column][k], column, notes)
            if not text:
                skipped["empty"] = skipped.get("empty", 0) + 1
                continue
            if sum(len(m["content"]) for m in messages) > max_chars:
                skipped["too_long"] = skipped.get("too_long", 0) + 1
                continue
            pid = str(batch[id_column][k]) if id_column else conversation_id(messages)
            if pid in seen:
                skipped["duplicate"] = skipped.get("duplicate", 0) + 1
                continue
            seen.add(pid)
            source = (batch["source"][k] if "source" in batch else None) or (
                batch["category"][k] if "category" in batch else None) or p.name  # fmt: skip
            n += 1
            yield PromptRow(prompt_id=pid, prompt=text, messages=messages, source=str(source),
                            columns={c: batch[c][k] for c in extra})  # fmt: skip


def load_prompts(
    path: str,
    column: str = "prompt",
    id_column: str | None = None,
    split: str = "train",
    limit: int | None = None,
    max_prompt_chars: int = 8000,
    base: Path | None = None,
) -> PromptSet:
    """Load, normalise and filter prompts into memory (small sets: eval, benches)."""
    skipped: dict[str, int] = {}
    rows = list(iter_prompts(path, column, id_column, split, limit, max_prompt_chars, base, skipped))
    return PromptSet(rows=rows, skipped=skipped, path=str(resolve_path(path, base)))
