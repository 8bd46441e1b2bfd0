"""Helpers of bench/scale.py: synthetic prompts, the bench recipe, and dataset comparison.

Prompts are built deterministically (fixed seed) from the sentences of MT-bench's `turns`
(../shared/data/mt_bench_questions.jsonl when present) mixed with sentences drawn from a seeded word
list: ~97% are 200-900 characters long, ~3% 2,000-6,000, and every prompt is unique.
"""

from __future__ import annotations

import hashlib
import json
import random
import re
import statistics
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from flows.dataset.prompts import prompt_id_for

ROOT = Path(__file__).resolve().parents[1]
MT_BENCH = ROOT.parent / "shared" / "data" / "mt_bench_questions.jsonl"
SPLITS = ("train_prefs", "test_prefs", "train_sft", "test_sft")
SYLLABLES = ("ka", "lo", "mi", "ren", "tas", "vo", "qui", "dar", "sel", "un", "or", "pe", "bri", "ton",
             "al", "mer", "nis", "ga", "fu", "ze", "cha", "lin", "os", "tre", "vi", "hem", "ad", "ru")  # fmt: skip
FALLBACK = (
    "Explain the main trade-offs of the approach you would choose. Give two concrete examples and say "
    "which one you prefer. Write a short summary for a reader who is new to the topic. List the steps "
    "in order and note what can go wrong at each one."
)


def _sentences(seed: int) -> tuple[list[str], list[str]]:
    """(MT-bench sentences, a seeded word list mixing MT-bench words and made-up words)."""
    texts: list[str] = []
    if MT_BENCH.exists():
        for line in MT_BENCH.read_text().splitlines():
            if line.strip():
                row = json.loads(line)
                texts += [str(t) for t in row.get("turns") or [row.get("prompt", "")] if t]
    if not texts:
        texts = [FALLBACK]
    sents = []
    for t in texts:
        sents += [s.strip() for s in re.split(r"(?<=[.?!])\s+", t.replace("\n", " ")) if len(s.strip()) > 20]
    rng = random.Random(f"words:{seed}")
    words = sorted({w.lower() for s in sents for w in re.findall(r"[A-Za-z]{3,}", s)})
    made_up = {"".join(rng.choices(SYLLABLES, k=rng.randint(2, 4))) for _ in range(3000)}
    return sents, words + sorted(made_up)


def _target_length(rng: random.Random) -> int:
    if rng.random() < 0.03:
        return rng.randint(2000, 6000)
    return int(rng.triangular(200, 900, 330))


def _one(i: int, seed: int, salt: int, sents: list[str], words: list[str]) -> str:
    rng = random.Random(f"prompt:{seed}:{i}:{salt}")
    target = _target_length(rng)
    parts = [rng.choice(sents)]
    size = len(parts[0])
    while size < target:
        if rng.random() < 0.45:
            s = rng.choice(sents)
        else:
            s = " ".join(rng.choices(words, k=rng.randint(6, 16))).capitalize() + rng.choice(".?.")
        parts.append(s)
        size += len(s) + 1
    text = " ".join(parts)
    if len(text) > target + 40:  # trim to about the target, at a word boundary
        text = text[:target].rsplit(" ", 1)[0].rstrip(",;:") + "."
    return text


def synthetic_prompts(n: int, seed: int = 0) -> Iterator[str]:
    """`n` prompts of realistic length, unique as rlaif sees them (`prompt_id_for`: whitespace
    collapsed), the same for the same (n, seed)."""
    sents, words = _sentences(seed)
    seen: set[str] = set()
    for i in range(n):
        salt = 0
        while True:
            text = _one(i, seed, salt, sents, words)
            pid = prompt_id_for(text)
            if pid not in seen:
                seen.add(pid)
                break
            salt += 1
        yield text


def write_prompts(path: Path, n: int, seed: int = 0) -> dict[str, float]:
    """Write `n` prompts as JSONL (`{"prompt": ...}`); return length statistics."""
    lengths = []
    tmp = path.with_suffix(".tmp")
    with tmp.open("w") as f:
        for text in synthetic_prompts(n, seed):
            lengths.append(len(text))
            f.write(json.dumps({"prompt": text}, ensure_ascii=False) + "\n")
    tmp.replace(path)
    return {"mean": statistics.fmean(lengths), "median": statistics.median(lengths),
            "long_share": sum(x >= 2000 for x in lengths) / len(lengths), "max": max(lengths)}  # fmt: skip


def recipe_yaml(prompts: Path, base_url: str, task_runner: str = "threads", dask_workers: int = 2) -> str:
    """The bench recipe: generate n=4 + ultrafeedback + pairwise (on the policy endpoint) + build."""
    recipe: dict[str, Any] = {
        "name": "scale-bench",
        "prompts": {"path": str(prompts)},
        "policy": {
            "model": "stub",
            "endpoints": [{"base_url": base_url, "model": "stub", "max_concurrency": 64}],
        },
        "sampling": {"n": 4, "max_tokens": 128},
        "shard_size": 256,
        # compare: all keeps 20 requests per prompt (12 pairwise), the load every earlier figure was
        # measured with; the default (only the emitted pair, both orders) would send 10
        "judges": [{"type": "ultrafeedback"}, {"type": "pairwise", "compare": "all"}],
        "binarize": {"test_fraction": 0.1},
    }
    if task_runner != "threads":
        recipe["task_runner"] = task_runner
        recipe["dask_workers"] = dask_workers
    return json.dumps(recipe, indent=2) + "\n"  # JSON is YAML


def _drop(row: dict[str, Any], dotted: tuple[str, ...]) -> dict[str, Any]:
    for path in dotted:
        *parents, leaf = path.split(".")
        node: Any = row
        for p in parents:
            node = node.get(p) if isinstance(node, dict) else None
        if isinstance(node, dict):
            node.pop(leaf, None)
    return row


def row_digests(path: Path, drop: tuple[str, ...] = ()) -> Counter[bytes]:
    """The multiset of a Parquet file's rows (canonical JSON, sha1), read in batches."""
    import pyarrow.parquet as pq

    out: Counter[bytes] = Counter()
    for batch in pq.ParquetFile(path).iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            raw = json.dumps(_drop(row, drop), sort_keys=True, ensure_ascii=False, default=str)
            out[hashlib.sha1(raw.encode()).digest()] += 1
    return out


def dataset_files(out: Path) -> dict[str, Path]:
    files = {"ultrafeedback": out / "parquet" / "ultrafeedback" / "train.parquet"}
    files.update({s: out / "parquet" / "binarized" / f"{s}.parquet" for s in SPLITS})
    return files


def row_counts(out: Path) -> dict[str, int]:
    import pyarrow.parquet as pq

    return {k: pq.ParquetFile(p).metadata.num_rows for k, p in dataset_files(out).items()}


def compare_runs(a: Path, b: Path, drop: tuple[str, ...] = ("provenance.created_at",)) -> tuple[bool, str]:
    """Are the UltraFeedback rows and the four binarized splits of runs `a` and `b` the same sets of
    rows (after dropping `drop` fields)? Returns (equal, 'name a/b[!=] ...' counts)."""
    same, parts = True, []
    for name, pa_ in dataset_files(a).items():
        pb = dataset_files(b)[name]
        da, db = row_digests(pa_, drop), row_digests(pb, drop)
        eq = da == db
        same &= eq
        parts.append(f"{name} {sum(da.values())}/{sum(db.values())}" + ("" if eq else " DIFFER"))
    return same, ", ".join(parts)
