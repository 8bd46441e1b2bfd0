"""What the review page reads: a run's pairs memory-mapped from its `datasets` folders, small numeric
columns for sorting and filtering, and one pair's full record (its UltraFeedback row) on demand.

Nothing is read whole: text is touched only for the rows of a page, a pair, or a text search.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
from pydantic import BaseModel

from flows.dataset.decisions import FLAGS, Decision, read_decisions
from flows.dataset.schema import UF_DIR
from flows.dataset.write import DATA_FILE
from serving.errors import DataError

PREFS = ("train_prefs", "test_prefs")
LOW_MARGIN = "low margin"  # certainty below LOW_CERTAINTY: computed here, not stored
ALL_FLAGS = (*FLAGS, LOW_MARGIN)
LOW_CERTAINTY = 0.25
SORTS = ("uncertain", "margin", "-margin", "p_chosen", "length_gap", "-length_gap")


class Query(BaseModel):
    """One page request: filters (all must hold), a sort and the page."""

    flag: str | None = None  # one of ALL_FLAGS
    origin: str | None = None
    principle: str | None = None
    judge: str | None = None
    split: str | None = None
    decided: str | None = None  # "yes" | "no" | a decision ("flip", ...)
    q: str | None = None  # text in the prompt or either answer (case-insensitive)
    sort: str = "uncertain"
    offset: int = 0
    limit: int = 25


def _mapped(folder: Path) -> pa.Table:
    """A `datasets` folder's one Arrow file, memory-mapped (as `load_from_disk` does): no copy."""
    return pa.ipc.open_stream(pa.memory_map(str(folder / DATA_FILE))).read_all()


def open_run(run: Path) -> tuple[pa.Table, np.ndarray, pa.Table]:
    """(pairs of both preference splits, each row's split as an index into PREFS, UltraFeedback rows);
    one-line errors."""
    run = Path(run)
    if not run.is_dir():
        raise DataError(f"{run}: no such folder (give the folder `rlaif run` wrote: the recipe's `output`)")
    if not (run / "build.json").exists() and not (run / "summary.json").exists():
        raise DataError(
            f"{run}: not an rlaif run (no build.json or summary.json); give the folder `rlaif run` wrote"
        )
    missing = [s for s in PREFS if not (run / "binarized" / s / DATA_FILE).exists()]
    if missing:
        raise DataError(f"{run}/binarized: no preference pairs ({', '.join(missing)} missing): the run's build "
                        "did not finish; re-run `rlaif run RECIPE` (finished requests are not sent again)")  # fmt: skip
    parts = [_mapped(run / "binarized" / s) for s in PREFS]  # no column added: that would import pandas
    pairs = pa.concat_tables(parts)
    split = np.repeat(np.arange(len(PREFS)), [t.num_rows for t in parts])
    if "pair_id" not in pairs.column_names:
        raise DataError(f"{run}/binarized: built by an older rlaif (no pair_id column); re-run `rlaif run RECIPE` "
                        "to rebuild it (0 model requests)")  # fmt: skip
    uf = _mapped(run / UF_DIR) if (run / UF_DIR / DATA_FILE).exists() else None
    if uf is None:
        raise DataError(
            f"{run}/{UF_DIR}: missing; re-run `rlaif run RECIPE` to rebuild it (0 model requests)"
        )
    return pairs, split, uf


def _content_lengths(col: pa.ChunkedArray, n: int) -> np.ndarray:
    """Characters of each row's messages (a list of {role, content})."""
    flat = pc.list_flatten(col)
    lens = pc.fill_null(pc.utf8_length(pc.struct_field(flat, "content")), 0).to_numpy()
    parents = pc.list_parent_indices(col).to_numpy()
    return np.bincount(parents, weights=lens, minlength=n)


def _codes(col: pa.ChunkedArray) -> tuple[np.ndarray, list[str | None]]:
    enc = col.combine_chunks().dictionary_encode()
    return pc.fill_null(enc.indices, -1).to_numpy(), enc.dictionary.to_pylist()


def _flag_bits(col: pa.ChunkedArray, n: int) -> np.ndarray:
    bits = np.zeros(n, dtype=np.int64)
    flat = pc.list_flatten(col)
    if len(flat):
        parents = pc.list_parent_indices(col).to_numpy()
        for k, name in enumerate(FLAGS):
            hit = pc.fill_null(pc.equal(flat, name), False).to_numpy(zero_copy_only=False)
            np.bitwise_or.at(bits, parents[hit], 1 << k)
    return bits


def certainty(margin: np.ndarray, p: np.ndarray, group: np.ndarray) -> np.ndarray:
    """How sure the judges were, 0..1: |2 p_chosen - 1| where a probability exists, else the margin's
    rank within its group (origin and judge: margins of different judges are on different scales)."""
    out = np.abs(2 * p - 1)
    no_p = np.isnan(p)
    for g in np.unique(group[no_p]):
        idx = np.flatnonzero(no_p & (group == g))
        m = margin[idx]
        ordered = np.sort(m)  # equal margins share their mean rank (all equal: 0.5)
        ranks = (np.searchsorted(ordered, m, "left") + np.searchsorted(ordered, m, "right")) / 2
        out[idx] = ranks / len(idx)
    return out


class RunIndex:
    """A run's pairs for the page: numeric columns in memory, text memory-mapped."""

    def __init__(self, run: Path) -> None:
        self.run = Path(run)
        self.pairs, self.split, self.uf = open_run(self.run)
        self.splits: list[str | None] = list(PREFS)
        t, n = self.pairs, self.pairs.num_rows
        self.n = n
        self.ids = t.column("pair_id").combine_chunks()
        self.margin = pc.fill_null(t.column("margin"), 0.0).to_numpy()
        self.p = pc.fill_null(t.column("p_chosen"), float("nan")).to_numpy()
        self.len_c = _content_lengths(t.column("chosen"), n)
        self.len_r = _content_lengths(t.column("rejected"), n)
        self.origin, self.origins = _codes(t.column("origin"))
        self.judge, self.judges = _codes(t.column("judge"))
        self.principle, self.principles = _codes(t.column("principle_id"))
        self.bits = _flag_bits(t.column("flags"), n)
        reviewed = pc.list_flatten(t.column("flags"))
        self.was_flipped = np.zeros(n, dtype=bool)  # the build applied a flip: show the judges' order
        if len(reviewed):
            hit = pc.fill_null(pc.equal(reviewed, "reviewed: flip"), False).to_numpy(zero_copy_only=False)
            self.was_flipped[pc.list_parent_indices(t.column("flags")).to_numpy()[hit]] = True
        group = np.where(self.origin >= 0, self.origin, 0) * (len(self.judges) + 1) + self.judge
        self.cert = certainty(self.margin, self.p, group)
        disagree = (self.bits & 1) > 0  # judges disagree: first in the queue, least certain first
        self.uncertain_order = np.argsort(self.cert - disagree, kind="stable")
        self.decisions: dict[str, Decision] = read_decisions(self.run / "review" / "decisions.jsonl")

    # ------------------------------------------------------------------ queries

    def row_of(self, pair_id: str) -> int | None:
        k = pc.index(self.ids, pa.scalar(pair_id, pa.string())).as_py()
        return None if k < 0 else k

    def rows_of(self, pair_ids: list[str]) -> np.ndarray:
        """Row of each pair id, -1 where this build has no such pair (one vectorised look-up)."""
        if not pair_ids:
            return np.array([], dtype=np.int64)
        return pc.fill_null(pc.index_in(pa.array(pair_ids, pa.string()), value_set=self.ids), -1).to_numpy()

    def _text_mask(self, q: str) -> np.ndarray:
        mask = np.zeros(self.n, dtype=bool)
        for name in ("prompt", "chosen", "rejected"):
            col = self.pairs.column(name)
            hit = pc.fill_null(
                pc.match_substring(pc.struct_field(pc.list_flatten(col), "content"), q, ignore_case=True),
                False,
            ).to_numpy(zero_copy_only=False)
            mask[pc.list_parent_indices(col).to_numpy()[hit]] = True
        return mask

    def _decided(self) -> np.ndarray:
        """Row -> the latest decision's index in ("accept", "flip", "tie", "drop"), -1 when undecided."""
        out = np.full(self.n, -1, dtype=np.int8)
        if self.decisions:
            keys = pa.array(list(self.decisions), pa.string())
            pos = pc.fill_null(pc.index_in(self.ids, value_set=keys), -1).to_numpy()
            names = ("accept", "flip", "tie", "drop")
            kinds = np.array([names.index(d.decision) for d in self.decisions.values()], dtype=np.int8)
            rows = np.flatnonzero(pos >= 0)
            out[rows] = kinds[pos[rows]]
        return out

    def select(self, query: Query) -> tuple[np.ndarray, int]:
        """(row numbers of the page, rows matching in all)."""
        mask = np.ones(self.n, dtype=bool)

        def code(value: str, names: list[str | None], codes: np.ndarray) -> np.ndarray:
            return codes == (names.index(value) if value in names else -2)

        if query.flag:
            if query.flag == LOW_MARGIN:
                mask &= self.cert < LOW_CERTAINTY
            elif query.flag in FLAGS:
                mask &= (self.bits & (1 << FLAGS.index(query.flag))) > 0
            else:
                raise DataError(f"flag {query.flag!r}: not one of {', '.join(ALL_FLAGS)}")
        for value, names, codes in ((query.origin, self.origins, self.origin), (query.judge, self.judges, self.judge),
                                    (query.principle, self.principles, self.principle),
                                    (query.split, self.splits, self.split)):  # fmt: skip
            if value:
                mask &= code(value, names, codes)
        if query.decided:
            dec = self._decided()
            names = ("accept", "flip", "tie", "drop")
            mask &= (dec >= 0) if query.decided == "yes" else (dec < 0) if query.decided == "no" else (
                dec == (names.index(query.decided) if query.decided in names else -2))  # fmt: skip
        if query.q:
            mask &= self._text_mask(query.q)
        if query.sort not in SORTS:
            raise DataError(f"sort {query.sort!r}: not one of {', '.join(SORTS)}")
        if query.sort == "uncertain":
            order = self.uncertain_order
        else:
            key = {"margin": self.margin, "-margin": -self.margin, "p_chosen": np.nan_to_num(self.p, nan=2.0),
                   "length_gap": self.len_c - self.len_r, "-length_gap": self.len_r - self.len_c}[query.sort]  # fmt: skip
            order = np.argsort(key, kind="stable")
        hits = order[mask[order]]
        lo = max(query.offset, 0)
        return hits[lo : lo + max(1, min(query.limit, 200))], int(len(hits))

    # ------------------------------------------------------------------ rows

    def flags_of(self, k: int) -> list[str]:
        out = [f for i, f in enumerate(FLAGS) if self.bits[k] & (1 << i)]
        return out + ([LOW_MARGIN] if self.cert[k] < LOW_CERTAINTY else [])

    def rows(self, ks: np.ndarray) -> list[dict[str, Any]]:
        """The page's rows, in the judges' order (a pair the build flipped for a reviewer is shown unflipped)."""
        if not len(ks):
            return []
        recs = [
            self.pairs.slice(int(k), 1).to_pylist()[0] for k in ks
        ]  # zero-copy slices: only these rows are read
        return [self._judges_order({**r, "split": PREFS[self.split[k]]}, int(k)) for r, k in zip(recs, ks)]

    def _judges_order(self, r: dict[str, Any], k: int) -> dict[str, Any]:
        if self.was_flipped[k]:
            r.update(chosen=r["rejected"], rejected=r["chosen"], score_chosen=r["score_rejected"],
                     score_rejected=r["score_chosen"], chosen_model=r["rejected_model"],
                     rejected_model=r["chosen_model"],
                     p_chosen=None if r["p_chosen"] is None else 1 - r["p_chosen"])  # fmt: skip
        d = self.decisions.get(r["pair_id"])
        return {
            "pair_id": r["pair_id"], "split": r["split"], "prompt_id": r["prompt_id"], "prompt": r["prompt"],
            "chosen": _text(r["chosen"]), "rejected": _text(r["rejected"]), "score_chosen": r["score_chosen"],
            "score_rejected": r["score_rejected"], "margin": r["margin"], "p_chosen": r["p_chosen"],
            "origin": r["origin"], "judge": r["judge"], "principle_id": r["principle_id"],
            "chosen_model": r["chosen_model"], "rejected_model": r["rejected_model"],
            "flags": self.flags_of(k), "certainty": round(float(self.cert[k]), 3),
            "decision": d.decision if d else None, "note": d.note if d else None,
        }  # fmt: skip

    def pair(self, pair_id: str) -> dict[str, Any] | None:
        """One pair with what the judges said about its two answers (ratings, rationales, verdicts in both
        orders, critique and revision), from the prompt's UltraFeedback row."""
        k = self.row_of(pair_id)
        if k is None:
            return None
        out = self.rows(np.array([k]))[0]
        u = pc.index(self.uf.column("prompt_id"), pa.scalar(out["prompt_id"], pa.string())).as_py()
        if u < 0:
            return out
        row = self.uf.slice(u, 1).to_pylist()[0]
        by_text = {c["response"]: c for c in row["completions"]}
        sides = {}
        for side in ("chosen", "rejected"):
            c = by_text.get(out[side])
            if c is None and side == "chosen":  # a revision: not one of the samples
                continue
            sides[side] = None if c is None else {
                k2: c.get(k2) for k2 in ("sample_index", "finish_reason", "completion_tokens", "annotations",
                                         "scores", "notes", "fine_grained_score", "critique", "revision",
                                         "principle_id")
            }  # fmt: skip
        out["sides"] = sides
        idx = {s: v["sample_index"] for s, v in sides.items() if v}
        if len(idx) == 2:
            a, b = idx["chosen"], idx["rejected"]
            out["verdicts"] = [
                {"judge": v["judge"], "first": "chosen" if v["i"] == a else "rejected",
                 "winner": {"x": "first", "y": "second"}.get(v["winner"], v["winner"]),
                 "consistent": v["consistent"], "p_first": v["p_x"]}
                for v in row["pairwise_verdicts"] if {v["i"], v["j"]} == {a, b}
            ]  # fmt: skip
        else:
            out["verdicts"] = []
        return out


def _text(msgs: list[dict[str, str]] | None) -> str:
    return "".join(m["content"] or "" for m in msgs or [])
