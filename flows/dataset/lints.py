"""Lints on the built dataset, streamed with `build`: duplicate and near-duplicate prompts (MinHash LSH),
decontamination against eval prompt sets (word n-gram overlap), empty or identical pairs, length bias.

Truncated answers are handled where pairs are picked (`flows/dataset/binarize.py`); their count is kept here.
"""

from __future__ import annotations

import hashlib
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flows.dataset.binarize import truncated
from flows.recipe import LintSpec
from serving.errors import DataError

NUM_PERM = 128  # MinHash permutations; the LSH takes about 3 KB per prompt (200 MB at 64k prompts)
SHINGLE_WORDS = 3  # near-duplicate shingles: word 3-grams
EXAMPLES_CAP = 50  # duplicate prompt_id pairs listed in summary.json
PROMPT_COLUMNS = ("prompt", "messages", "turns", "question", "instruction", "text", "input")


class LintReport(BaseModel):
    """Counts in summary.json (`build.lints`); truncated pairs/SFT rows are in `build.stats`."""

    truncated_completions: int = 0  # finish_reason "length" (never chosen unless allowed)
    identical_pairs_dropped: int = 0  # chosen == rejected after whitespace normalisation
    empty_pairs_dropped: int = 0  # chosen or rejected empty
    empty_sft_dropped: int = 0  # best-of-N row with an empty answer
    exact_duplicate_prompts: int = 0  # same text (whitespace normalised) as an earlier prompt
    near_duplicate_prompts: int = 0  # MinHash-LSH match of an earlier prompt (not an exact one)
    duplicate_examples: list[tuple[str, str, str]] = Field(default_factory=list)  # (earlier, later, kind)
    duplicate_prompts_dropped: int = 0  # only with lints.drop_duplicate_prompts
    decontaminated: dict[str, int] = Field(default_factory=dict)  # eval file -> prompts dropped
    decontaminated_prompts: int = 0
    longer_chosen_share: float | None = None  # pairs whose chosen answer has more characters
    mean_length_gap: float | None = None  # mean of len(chosen) - len(rejected), characters


def words(text: str) -> list[str]:
    return re.findall(r"\w+", text.lower())


def ngrams(ws: list[str], n: int) -> set[str]:
    """Word n-grams; a text of fewer than n words is one gram (it matches only a text equal to it)."""
    if len(ws) < n:
        return {" ".join(ws)} if ws else set()
    return {" ".join(ws[i : i + n]) for i in range(len(ws) - n + 1)}


def prompt_text(row: dict[str, Any]) -> str:
    return "\n".join(m["content"] for m in row.get("messages") or []) or row.get("prompt") or ""


def _content(msgs: list[dict[str, str]]) -> str:
    return "".join(m["content"] or "" for m in msgs)


def content_sha256(path: Path) -> str:
    """sha256 of a file, or of a folder's files (relative names and contents)."""
    h = hashlib.sha256()
    for f in sorted(path.rglob("*")) if path.is_dir() else [path]:
        if f.is_file():
            h.update(str(f.relative_to(path) if path.is_dir() else f.name).encode())
            with f.open("rb") as fh:
                while chunk := fh.read(1 << 20):
                    h.update(chunk)
    return h.hexdigest()


def eval_texts(path: Path) -> Iterator[str]:
    """Prompt texts of an eval set (JSONL/Parquet/CSV, or a `datasets` folder: every split), read with
    the prompt readers; the column is the first of PROMPT_COLUMNS it has; a list is joined."""
    import datasets

    from flows.dataset.prompts import _load_dataset

    if path.is_dir():
        try:
            ds = datasets.load_from_disk(str(path))
        except (FileNotFoundError, ValueError) as exc:
            raise DataError(f"{path}: not a `datasets` folder ({exc}) (decontaminate)") from None
        parts = list(ds.values()) if isinstance(ds, datasets.DatasetDict) else [ds]
    else:
        parts = [_load_dataset(path, "train")]
    for ds in parts:
        col = next((c for c in PROMPT_COLUMNS if c in ds.column_names), None)
        if col is None:
            raise DataError(
                f"{path}: no prompt column (one of {list(PROMPT_COLUMNS)}; has {ds.column_names})"
            )
        for batch in ds.select_columns([col]).iter(batch_size=1024):
            for v in batch[col]:
                if isinstance(v, list):
                    yield "\n".join(str(m["content"]) if isinstance(m, dict) else str(m) for m in v)
                elif v is not None:
                    yield str(v)


class EvalIndex:
    """Word n-grams of every eval file: hash(gram) -> bit mask of the files that have it."""

    def __init__(self, files: list[Path], n: int) -> None:
        self.n = n
        self.grams: dict[int, int] = {}
        for k, f in enumerate(files):
            for text in eval_texts(f):
                for g in ngrams(words(text), n):
                    h = hash(g)
                    self.grams[h] = self.grams.get(h, 0) | (1 << k)

    def match(self, text: str) -> int:
        """Bit mask of the eval files sharing an n-gram with `text` (0: none)."""
        mask = 0
        for g in ngrams(words(text), self.n):
            mask |= self.grams.get(hash(g), 0)
        return mask


def lint_fingerprint(spec: LintSpec, files: list[Path]) -> dict[str, Any]:
    """What the build fingerprint needs: the settings and each eval file's content hash."""
    return {"lints": spec.model_dump(), "decontaminate": [[str(f), content_sha256(f)] for f in files]}


class Linter:
    """Streams over the build's rows and pairs; `keep_*` say whether a row goes to the outputs."""

    def __init__(self, spec: LintSpec, eval_files: list[Path]) -> None:
        from datasketch import MinHash, MinHashLSH

        self.spec = spec
        self.report = LintReport(decontaminated={str(f): 0 for f in eval_files})
        self.dropped: set[str] = set()  # prompt ids left out of both datasets
        self._files = [str(f) for f in eval_files]
        self._index = EvalIndex(eval_files, spec.decontaminate_ngram) if eval_files else None
        self._exact: dict[bytes, str] = {}
        self._lsh = MinHashLSH(threshold=spec.near_duplicate_threshold, num_perm=NUM_PERM)
        self._base = MinHash(num_perm=NUM_PERM, seed=1)
        self._minhash = MinHash
        self._pairs = self._longer = self._gap = 0
        self.last_drop: str | None = None  # why the last `keep_*` said False (a ledger drop name)
        self.duplicate: str | None = None  # the last prompt kept: "exact"/"near" duplicate of an earlier one

    def keep_prompt(self, row: dict[str, Any]) -> bool:
        """False for a prompt overlapping an eval set, or a later duplicate with drop_duplicate_prompts."""
        pid, text = row["prompt_id"], prompt_text(row)
        r = self.report
        self.duplicate = None
        if self._index is not None and (mask := self._index.match(text)):
            for k, name in enumerate(self._files):
                r.decontaminated[name] += (mask >> k) & 1
            r.decontaminated_prompts += 1
            self.dropped.add(pid)
            self.last_drop = "lint:decontaminated"
            return False
        key = hashlib.blake2b(" ".join(text.split()).encode(), digest_size=16).digest()
        earlier, kind = self._exact.get(key), "exact"
        sig = None
        if earlier is None and (grams := ngrams(words(text), SHINGLE_WORDS)):
            sig = self._minhash(
                num_perm=NUM_PERM, permutations=self._base.permutations, scheme=self._base.scheme
            )
            sig.update_batch([g.encode() for g in grams])
            near = self._lsh.query(sig)
            earlier, kind = (min(near), "near") if near else (None, kind)
        self.duplicate = kind if earlier is not None else None
        if earlier is not None:
            if kind == "exact":
                r.exact_duplicate_prompts += 1
            else:
                r.near_duplicate_prompts += 1
            if len(r.duplicate_examples) < EXAMPLES_CAP:
                r.duplicate_examples.append((earlier, pid, kind))
            if self.spec.drop_duplicate_prompts:
                r.duplicate_prompts_dropped += 1
                self.dropped.add(pid)
                self.last_drop = "lint:duplicate"
                return False
        self._exact.setdefault(key, pid)
        if sig is not None and pid not in self._lsh:
            self._lsh.insert(pid, sig)
        r.truncated_completions += sum(truncated(c) for c in row["completions"])
        return True

    def keep_pair(self, pair: dict[str, Any]) -> bool:
        """Drops a pair with an empty side or with identical sides; kept pairs feed the length figures."""
        c, rej = _content(pair["chosen"]), _content(pair["rejected"])
        if not c.strip() or not rej.strip():
            self.report.empty_pairs_dropped += 1
            self.last_drop = "lint:empty"
            return False
        if c.split() == rej.split():
            self.report.identical_pairs_dropped += 1
            self.last_drop = "lint:identical"
            return False
        self._pairs += 1
        self._longer += len(c) > len(rej)
        self._gap += len(c) - len(rej)
        return True

    def keep_sft(self, row: dict[str, Any]) -> bool:
        if not _content(row["chosen"]).strip():
            self.report.empty_sft_dropped += 1
            self.last_drop = "lint:empty"
            return False
        return True

    def finish(self) -> LintReport:
        if self._pairs:
            self.report.longer_chosen_share = self._longer / self._pairs
            self.report.mean_length_gap = self._gap / self._pairs
        return self.report
