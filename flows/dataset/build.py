"""Build: stream every shard's rows into the UltraFeedback and binarized datasets with bounded memory.

Parquet writers take one shard at a time; the `datasets` folders are made from that Parquet. Outputs
go to a staging folder first; `build.json` (written last, removed first) marks a finished build.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
import random
import shutil
import tempfile
from array import array
from collections.abc import Iterable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from flows.dataset.atomic_files import read_json, write_json
from flows.dataset.binarize import (
    BinarizeStats,
    best_of_n,
    binarize_prompt,
    is_test,
    pair_id,
    truncated,
    verdict_probabilities,
)
from flows.dataset.decisions import Decision, ReviewCounts, apply, decisions_file, digest, read_decisions
from flows.dataset.ledger import Account, Ledger
from flows.dataset.lints import Linter, LintReport, lint_fingerprint
from flows.dataset.schema import UF_DIR, binarized_features
from flows.recipe import BinarizeSpec, LintSpec
from judges.contract import merge

SPLITS = ("train_prefs", "test_prefs", "train_sft", "test_sft")


class BuildResult(BaseModel):
    out_dir: str
    prompts: int = 0
    completions: int = 0
    pairs: dict[str, int] = Field(default_factory=dict)  # split -> rows
    stats: BinarizeStats = Field(default_factory=BinarizeStats)
    constitution_pairs: int = 0
    judges: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> figures
    mean_len_chosen: float | None = None
    mean_len_rejected: float | None = None
    lints: LintReport = Field(default_factory=LintReport)
    review: ReviewCounts = Field(default_factory=ReviewCounts)
    ledger: Ledger = Field(default_factory=Ledger)
    fingerprint: str = ""
    cached: bool = False


class ShardFiles(BaseModel):
    """What `build` reads of a finished shard."""

    rows_path: str
    cpairs_path: str
    fingerprint: str = ""


def provenance(recipe: Any, judges: dict[str, dict[str, Any]], extra: dict[str, str]) -> dict[str, Any]:
    """The rows' provenance; `extra`: what the judges add (`Judge.provenance`, e.g. a constitution's sha256)."""
    return {
        "policy": recipe.policy.display_name(),
        "judges": [f"{k}:{j['type']}:{j.get('model', '')}" for k, j in judges.items()],
        "constitution_sha256": extra.get("constitution_sha256"),
        "recipe_sha256": recipe.sha256(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rlaif_version": version("rlaif"),
    }


def test_ids_fallback(shards: list[ShardFiles], fraction: float) -> tuple[set[str], set[str]]:
    """(forced test ids, forced train ids) so that 2+ prompts always give both splits (one light pass)."""
    n = n_test = 0
    lo = hi = None
    for s in shards:
        for pid in pq.read_table(s.rows_path, columns=["prompt_id"]).column(0).to_pylist():
            n += 1
            n_test += is_test(pid, fraction)
            h = hashlib.sha256(pid.encode()).hexdigest()
            lo = min(lo or (h, pid), (h, pid))
            hi = max(hi or (h, pid), (h, pid))
    if n < 2 or fraction <= 0 or lo is None or hi is None:
        return set(), set()
    if n_test == 0:
        return {lo[1]}, set()
    if n_test == n:
        return set(), {hi[1]}
    return set(), set()


class _Writers:
    """One Parquet writer per output file, opened lazily, closed together."""

    def __init__(self, root: Path, uf_schema: pa.Schema) -> None:
        self.root = root
        self.pair_schema = binarized_features().arrow_schema
        self.uf = pq.ParquetWriter(root / "parquet" / UF_DIR / "train.parquet", uf_schema)
        self.splits = {s: pq.ParquetWriter(root / "parquet" / "binarized" / f"{s}.parquet", self.pair_schema)
                       for s in SPLITS}  # fmt: skip
        self.counts = dict.fromkeys(SPLITS, 0)

    def pairs(self, split: str, rows: list[dict[str, Any]]) -> None:
        if rows:
            full = [{**r, "messages": r["prompt"] + r["chosen"]} for r in rows]
            self.splits[split].write_table(pa.Table.from_pylist(full, schema=self.pair_schema))
            self.counts[split] += len(rows)

    def close(self) -> None:
        self.uf.close()
        for w in self.splits.values():
            w.close()


class PlotData:
    """What the report plots need, kept small: scores and margins as float arrays, a length sample."""

    def __init__(self) -> None:
        self.scores, self.margins = array("d"), array("d")
        self.lengths: list[tuple[int, int]] = []
        self.seen = 0
        self.rng = random.Random(0)

    def pair(self, chosen: int, rejected: int) -> None:
        self.seen += 1
        if len(self.lengths) < 3000:
            self.lengths.append((chosen, rejected))
        elif (k := self.rng.randrange(self.seen)) < 3000:
            self.lengths[k] = (chosen, rejected)


def build(
    out_dir: Path, shards: list[ShardFiles], spec: BinarizeSpec, score_key: str | None, uf_schema: pa.Schema,
    prov: dict[str, Any], judge_figures: dict[str, dict[str, Any]] | None = None,
    lints: LintSpec | None = None, decontaminate: list[str] | None = None, ledger: Ledger | None = None,
) -> tuple[BuildResult, PlotData | None]:  # fmt: skip
    """Binarise, lint (flows/dataset/lints.py) and write both datasets; a build whose inputs did not
    change is not redone.

    `score_key` is the judge whose scores rank completions; when that judge also gave pairwise
    verdicts, a pair is kept only if its verdict agrees. `decontaminate`: eval prompt files.
    `ledger`: what came before the build (prompts read, samples asked, constitution candidates and
    their drops, from the manifest and the shards); without it the build's own inputs are the given.
    The build adds its drops and what it wrote, and fails (LedgerError) when an equation does not close."""
    lints = lints or LintSpec()
    eval_files = [Path(p).expanduser() for p in decontaminate or []]
    decisions = read_decisions(decisions_file(out_dir))  # a malformed line stops here: nothing written
    fp_data = (
        [[s.rows_path, s.fingerprint] for s in shards],
        spec.model_dump(),
        score_key,
        {k: v for k, v in prov.items() if k != "created_at"},
        lint_fingerprint(lints, eval_files),
        *([digest(decisions)] if decisions else []),  # no decisions: the fingerprint of earlier builds
    )
    fp = hashlib.sha256(json.dumps(fp_data, sort_keys=True, default=str).encode()).hexdigest()[:16]
    out_dir.mkdir(parents=True, exist_ok=True)
    marker = out_dir / "build.json"
    if marker.exists() and all((out_dir / d).exists() for d in ("binarized", UF_DIR, "parquet")):
        old = BuildResult.model_validate(read_json(marker))
        if old.fingerprint == fp:
            return old.model_copy(update={"cached": True}), None
    marker.unlink(missing_ok=True)
    force_test, force_train = test_ids_fallback(shards, spec.test_fraction)

    def test(pid: str) -> bool:
        return pid in force_test or (pid not in force_train and is_test(pid, spec.test_fraction))

    res = BuildResult(out_dir=str(out_dir), fingerprint=fp)
    upstream = ledger is not None
    led = ledger.model_copy(deep=True) if ledger is not None else Ledger()
    judged = led.origin("judge")
    plot = PlotData()
    linter = Linter(lints, eval_files)
    allow_cut = lints.allow_truncated_chosen
    len_c = len_r = 0
    review = Reviewed(decisions, spec.keep_ties)
    prov_type = pa.struct(uf_schema.field("provenance").type)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        for sub in ("parquet/ultrafeedback", "parquet/binarized"):
            (staging / sub).mkdir(parents=True)
        w = _Writers(staging, uf_schema)
        try:
            for s in shards:
                table = pq.read_table(s.rows_path)
                rows = table.to_pylist()
                keep, dups = [], set()
                for r in rows:
                    kept = linter.keep_prompt(r)
                    keep.append(kept)
                    if kept and linter.duplicate:
                        dups.add(r["prompt_id"])
                    if not upstream:
                        led.prompts.given += 1
                        led.samples.given += len(r["completions"])
                    if not kept:
                        led.prompts.drop(linter.last_drop or "lint")
                        led.samples.drop("prompt dropped by lints", len(r["completions"]))
                if not all(keep):
                    table = table.filter(pa.array(keep))
                    rows = [r for r, k in zip(rows, keep) if k]
                prov_col = pa.array([prov] * len(rows), type=prov_type)
                w.uf.write_table(
                    table.append_column("provenance", prov_col).select(uf_schema.names).cast(uf_schema)
                )
                led.prompts.kept += len(rows)
                led.samples.kept += sum(len(r["completions"]) for r in rows)
                out: dict[str, list[dict[str, Any]]] = {k: [] for k in SPLITS}
                written: set[str] = set()  # this shard's pair ids (a prompt's pairs are all in its shard)
                cut: dict[str, set[str]] = {}  # prompt id -> its answers cut at max_tokens (this shard)
                for row in rows:
                    if any(truncated(c) for c in row["completions"]):
                        cut[row["prompt_id"]] = {c["response"] for c in row["completions"] if truncated(c)}
                    res.prompts += 1
                    res.completions += len(row["completions"])
                    for c in row["completions"]:
                        if c.get("fine_grained_score") is not None:
                            plot.scores.append(c["fine_grained_score"])
                    split = "test" if test(row["prompt_id"]) else "train"
                    verdicts = {(v["i"], v["j"]): v["winner"] for v in row["pairwise_verdicts"]
                                if v["judge"] == score_key} or None  # fmt: skip
                    if score_key is not None:
                        probs = verdict_probabilities(row["pairwise_verdicts"], score_key)
                        pairs = binarize_prompt(row, score_key, spec, verdicts, res.stats, probs, allow_cut)
                        for p in pairs:
                            if not linter.keep_pair(d := p.model_dump()):
                                judged.drop(linter.last_drop or "lint")
                            elif repeated(d := with_id(d, dups), written):
                                judged.drop(REPEAT)
                            elif (d := review.pair(d, judged)) is not None:
                                out[f"{split}_prefs"].append(d)
                    else:
                        res.stats.prompts += 1
                    led.sft.given += 1
                    cut_before = res.stats.truncated_sft_dropped
                    sft = best_of_n(row, score_key, res.stats, allow_cut)
                    if sft is None:
                        led.sft.drop("truncated" if res.stats.truncated_sft_dropped > cut_before
                                     else "no scored completion")  # fmt: skip
                    elif linter.keep_sft(sft):
                        out[f"{split}_sft"].append(with_id(sft, dups))
                    else:
                        led.sft.drop(linter.last_drop or "lint")
                for cp in pq.read_table(s.cpairs_path).to_pylist():  # pairs the judges made themselves
                    const = led.origin(cp["origin"])
                    if not upstream:
                        const.given += 1
                    if cp["prompt_id"] in linter.dropped:
                        const.drop("prompt dropped by lints")
                        continue
                    if not extra_pair_kept(cp, spec, res.stats, const):
                        continue
                    if not linter.keep_pair(cp):
                        const.drop(linter.last_drop or "lint")
                        continue
                    if repeated(cp := with_id(cp, dups, cut.get(cp["prompt_id"])), written):
                        const.drop(REPEAT)
                        continue
                    if (cp := review.pair(cp, const)) is None:
                        continue
                    out[f"{'test' if test(cp['prompt_id']) else 'train'}_prefs"].append(cp)
                    res.constitution_pairs += 1
                for split, prs in out.items():
                    if split.endswith("prefs"):
                        for p in prs:
                            lc, lr = len(p["chosen"][0]["content"]), len(p["rejected"][0]["content"])
                            len_c, len_r = len_c + lc, len_r + lr
                            plot.pair(lc, lr)
                            if split == "train_prefs":
                                plot.margins.append(p["margin"])
                    for p in prs:
                        if split.endswith("prefs"):
                            led.origin(p.pop(FROM, p["origin"])).kept += 1
                        else:
                            led.sft.kept += 1
                    w.pairs(split, prs)
        finally:
            w.close()
        res.pairs = dict(w.counts)
        st = res.stats
        judged.given += st.candidates
        extra = [a for o, a in led.pairs.items() if a is not judged]  # judges' own pairs: counted there
        judged.drops({"tie": st.ties_dropped - sum(a.dropped.get("tie", 0) for a in extra),
                      "truncated": st.truncated_chosen_dropped, "verdict disagrees": st.verdict_disagrees,
                      "below min_margin": st.below_margin - sum(a.dropped.get("below min_margin", 0) for a in extra)})  # fmt: skip
        led.notes["truncated chosen re-picked"] = st.truncated_chosen_repicked
        res.review = review.finish()
        if n := review.kept:
            led.notes["pairs a reviewer decided (origin human)"] = n
        if res.review.unmatched:
            led.notes["decisions naming no pair of this build"] = res.review.unmatched
        res.ledger = led
        led.check()
        n_pairs = res.pairs["train_prefs"] + res.pairs["test_prefs"]
        if n_pairs:
            res.mean_len_chosen, res.mean_len_rejected = len_c / n_pairs, len_r / n_pairs
        _to_datasets(staging, fp)
        for name in ("binarized", UF_DIR, "parquet"):
            target = out_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    res.judges = judge_figures or {}
    res.lints = linter.finish()
    write_json(marker, res.model_dump())
    return res, plot


REPEAT = (
    "repeat of an earlier pair (samples with the same text)"  # the ledger's drop for a pair_id seen before
)


def repeated(row: dict[str, Any], seen: set[str]) -> bool:
    """True when this pair (same prompt, origin, principle, chosen and rejected text) was met before in
    the shard: two samples with one text make the same pair twice, and a dataset names each pair once."""
    if row["pair_id"] in seen:
        return True
    seen.add(row["pair_id"])
    return False


FROM = "_ledger_origin"  # a decided pair's origin before it became "human": its ledger account


def with_id(row: dict[str, Any], duplicates: set[str], cut: set[str] | None = None) -> dict[str, Any]:
    """The row with its `pair_id` and flags: "duplicate prompt" (an exact or near duplicate of an
    earlier prompt), "truncated" for a judges' own pair whose rejected answer was cut (`cut`: such answers)."""
    text = [m["content"] for side in ("chosen", "rejected") for m in row.get(side) or []]
    row["pair_id"] = pair_id(row["prompt_id"], row["origin"], row.get("principle_id"), *(text + ["", ""])[:2])
    flags = list(row.get("flags") or [])
    if cut and len(text) > 1 and text[1] in cut and "truncated" not in flags:
        flags.append("truncated")
    if row["prompt_id"] in duplicates:
        flags.append("duplicate prompt")
    row["flags"] = flags
    return row


class Reviewed:
    """Applies the review decisions to the pairs `build` is about to write, and counts them."""

    def __init__(self, decisions: dict[str, Decision], keep_ties: bool) -> None:
        self.decisions, self.keep_ties = decisions, keep_ties
        self.seen: set[str] = set()
        self.kept = 0  # decided pairs written (origin "human")
        self.counts = ReviewCounts(decisions=len(decisions))

    def pair(self, row: dict[str, Any], account: Account) -> dict[str, Any] | None:
        """The row as decided (None: it leaves the dataset, a named drop in `account`)."""
        d = self.decisions.get(row["pair_id"])
        if d is None:
            return row
        self.seen.add(row["pair_id"])
        c = self.counts
        name = {"accept": "accepted", "flip": "flipped", "tie": "tied", "drop": "dropped"}[d.decision]
        setattr(c, name, getattr(c, name) + 1)
        out = apply(row, d, self.keep_ties)
        if out is None:
            account.drop(f"reviewer: {d.decision}")
            return None
        out[FROM] = row["origin"]
        out["flags"] = [*out.get("flags", []), f"reviewed: {d.decision}"]  # the page shows the judges' order
        self.kept += 1
        return out

    def finish(self) -> ReviewCounts:
        missing = [k for k in self.decisions if k not in self.seen]
        self.counts.unmatched, self.counts.unmatched_examples = len(missing), missing[:10]
        return self.counts


def extra_pair_kept(pair: dict[str, Any], spec: BinarizeSpec, stats: BinarizeStats,
                    account: Account | None = None) -> bool:  # fmt: skip
    """The recipe's `keep_ties` applies to the pairs judges made themselves (a constitution's) as to
    ranked ones; their margin (0-1) is held to `constitution_min_margin`, not to the ranking judge's
    `min_margin` (another scale)."""
    account = account or Account()
    if pair["margin"] <= 0 and not spec.keep_ties:
        stats.ties_dropped += 1
        account.drop("tie")
        return False
    if pair["margin"] < spec.constitution_min_margin:
        stats.below_margin += 1
        account.drop("below min_margin")
        return False
    return True


def _to_datasets(staging: Path, fingerprint: str) -> None:
    """`datasets` folders from the Parquet files, streamed batch by batch (bounded memory)."""
    from flows.dataset.write import write_dataset, write_dataset_dict

    pq_dir = staging / "parquet"
    write_dataset_dict(
        {s: pq_dir / "binarized" / f"{s}.parquet" for s in SPLITS}, staging / "binarized", fingerprint
    )
    write_dataset(pq_dir / UF_DIR / "train.parquet", staging / UF_DIR, f"{fingerprint}-uf")


def sum_tallies(parts: Iterable[dict[str, Any]]) -> dict[str, Any]:
    total: dict[str, Any] = {}
    for p in parts:
        merge(total, p)
    return total
