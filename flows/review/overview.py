"""The review page's overview: a run's counts, histograms and agreement figures, computed from the index
(numeric columns only) and the decisions; the page draws them."""

from __future__ import annotations

from collections import Counter
from typing import Any

import numpy as np

from flows.dataset.decisions import FLAGS
from flows.evals.interval import wilson
from flows.review.index import LOW_CERTAINTY, LOW_MARGIN, RunIndex

BINS = 20
SCATTER = 400  # chosen-vs-rejected length points drawn (a fixed sample)


def histogram(values: np.ndarray, bins: int = BINS) -> dict[str, Any]:
    values = values[np.isfinite(values)]
    if not len(values):
        return {"edges": [], "counts": []}
    lo, hi = float(values.min()), float(values.max())
    if lo == hi:
        lo, hi = lo - 0.5, hi + 0.5
    counts, edges = np.histogram(values, bins=bins, range=(lo, hi))
    return {"edges": [round(float(e), 4) for e in edges], "counts": counts.tolist()}


def reviewer_agreement(ix: RunIndex) -> dict[str, Any]:
    """How often the judges' order matched the reviewer's (accept) rather than not (flip), overall and
    per judge, with Wilson 95% intervals; ties and drops are counted but not scored."""
    per: dict[str, Counter[str]] = {}
    rows = ix.rows_of(list(ix.decisions))
    for d, k in zip(ix.decisions.values(), rows):
        judge = d.pair.judge if d.pair else (ix.judges[ix.judge[k]] if k >= 0 and ix.judge[k] >= 0 else "?")
        per.setdefault(str(judge), Counter())[d.decision] += 1
        per.setdefault("all judges", Counter())[d.decision] += 1

    def figures(c: Counter[str]) -> dict[str, Any]:
        n = c["accept"] + c["flip"]
        rate = c["accept"] / n if n else None
        lo, hi = wilson(rate or 0.0, n)
        return {"n": n, "agree": rate, "ci_low": lo if n else None, "ci_high": hi if n else None,
                **{k: c[k] for k in ("accept", "flip", "tie", "drop")}}  # fmt: skip

    return {k: figures(c) for k, c in sorted(per.items(), key=lambda kv: kv[0] != "all judges")}


def overview(ix: RunIndex) -> dict[str, Any]:
    n = ix.n

    def by(codes: np.ndarray, names: list[str | None]) -> dict[str, int]:
        counts = np.bincount(codes[codes >= 0], minlength=len(names)) if n else np.zeros(len(names), int)
        return {str(names[i]): int(c) for i, c in enumerate(counts) if c}

    flags = {f: int(((ix.bits & (1 << i)) > 0).sum()) for i, f in enumerate(FLAGS)}
    flags[LOW_MARGIN] = int((ix.cert < LOW_CERTAINTY).sum())
    judged = ix.origin == (ix.origins.index("judge") if "judge" in ix.origins else -2)
    margins = {str(name): histogram(ix.margin[ix.origin == i]) for i, name in enumerate(ix.origins)}
    rng = np.random.default_rng(0)
    pick = np.sort(rng.choice(n, size=min(n, SCATTER), replace=False)) if n else np.array([], int)
    decided = Counter(d.decision for d in ix.decisions.values())
    matched = int((ix.rows_of(list(ix.decisions)) >= 0).sum())
    return {
        "run": str(ix.run),
        "pairs": n,
        "splits": by(ix.split, ix.splits),
        "origins": by(ix.origin, ix.origins),
        "judges": by(ix.judge, ix.judges),
        "principles": by(ix.principle, ix.principles),
        "flags": flags,
        "margin_histograms": margins,
        "p_chosen_histogram": histogram(ix.p, bins=10) if np.isfinite(ix.p).any() else None,
        "judge_agreement": {  # ranked pairs no other judge (or order of a pairwise judge) disputes
            "pairs": int(judged.sum()),
            "agree": float(1 - ((ix.bits[judged] & 1) > 0).mean()) if judged.any() else None,
        },
        "length": {
            "mean_chosen": float(ix.len_c.mean()) if n else None,
            "mean_rejected": float(ix.len_r.mean()) if n else None,
            "longer_chosen_share": float((ix.len_c > ix.len_r).mean()) if n else None,
            "points": [[int(ix.len_c[k]), int(ix.len_r[k])] for k in pick],
        },
        "decisions": {"total": len(ix.decisions), **decided, "in_this_build": matched},
        "reviewer_agreement": reviewer_agreement(ix),
    }
