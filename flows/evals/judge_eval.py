"""`rlaif judge-eval`: can I trust this judge? Any judge on human-labelled pairs, each pair shown in both
orders: accuracy with a bootstrap interval, position bias, calibration, and the margin over "longer wins"."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import BaseModel, computed_field

from judges.contract import Judge, Preference, Side, as_prompt, prefer_both_orders
from serving.errors import DataError


class LabelledPair(BaseModel):
    """A human label: `chosen` is better than `rejected`, or (`tie`) neither is."""

    prompt: str
    chosen: str
    rejected: str
    tie: bool = False
    category: str | None = None
    columns: dict[str, Any] = {}  # the line's other fields: what a judge may read (e.g. a reference answer)


class Figures(BaseModel):
    """Figures over a set of pairs (all of them, or one category). See docs/JUDGES.md for how to read them."""

    n: int
    accuracy: (
        float  # both-order verdict: chosen 1, rejected 0, tie 0.5; tie pairs: tie in both orders 1, else 0.5
    )
    ci_low: float  # 95% percentile bootstrap over pairs
    ci_high: float
    soft_accuracy: float | None = None  # mean both-order P(chosen better); None without probabilities
    brier: float | None = None  # mean (1 - P(chosen better))^2 (target 0.5 on tie pairs)
    tie_rate: float  # share of pairs whose both-order verdict is a tie (said so, or the orders disagree)
    consistency: float  # share of pairs whose two orders agree (the same answer, or tie in both)
    p_first: float | None = None  # share of decided single-order verdicts won by the answer shown first
    length_baseline: float  # accuracy of "the longer answer wins" (equal lengths: a tie)
    margin_over_length: float  # accuracy - length_baseline


class JudgeEval(Figures):
    """One judge on labelled pairs; `categories` has a row per category (empty when pairs have none)."""

    parse_failures: int
    judge: str
    categories: dict[str, Figures] = {}

    @computed_field  # type: ignore[prop-decorator]
    @property
    def position_consistency(self) -> float:
        """Old name of `consistency` (README and older readers)."""
        return self.consistency


NO_CATEGORY = "(none)"


def load_pairs(path: Path | str) -> list[LabelledPair]:
    """Read a JSONL of {prompt, chosen, rejected, tie?, category?}; errors name file:line."""
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: pairs file does not exist")
    out = []
    for no, line in enumerate(path.read_text().splitlines(), start=1):
        if not line.strip():
            continue
        try:
            rec = json.loads(line)
        except ValueError:
            raise DataError(f"{path}:{no}: not valid JSON") from None
        if not isinstance(rec, dict):
            raise DataError(f"{path}:{no}: expected an object with prompt, chosen, rejected")
        missing = [k for k in ("prompt", "chosen", "rejected") if not isinstance(rec.get(k), str)]
        if missing:
            raise DataError(f"{path}:{no}: missing or non-text field(s) {missing}")
        if not isinstance(rec.get("tie", False), bool):
            raise DataError(f"{path}:{no}: `tie` must be true or false, got {rec['tie']!r}")
        if rec.get("category") is not None and not isinstance(rec["category"], str):
            raise DataError(f"{path}:{no}: `category` must be text, got {rec['category']!r}")
        extra = {k: v for k, v in rec.items() if k not in LabelledPair.model_fields}
        out.append(LabelledPair(prompt=rec["prompt"], chosen=rec["chosen"], rejected=rec["rejected"],
                                tie=rec.get("tie", False), category=rec.get("category"), columns=extra))  # fmt: skip
    if not out:
        raise DataError(f"{path}: no pairs")
    return out


def pair_score(verdict: Side, tie: bool, called_tie: bool) -> float:
    """One pair's accuracy point. Human preference: chosen (x) 1, rejected (y) 0, a tie 0.5. Human tie: 1
    when the judge called a tie in both orders, else 0.5 (a pick, or orders that disagree, is a coin)."""
    if tie:
        return 1.0 if called_tie else 0.5
    return {"x": 1.0, "y": 0.0, "tie": 0.5}[verdict]


def length_verdict(pair: LabelledPair) -> Side:
    a, b = len(pair.chosen), len(pair.rejected)
    return "x" if a > b else "y" if b > a else "tie"


def p_chosen(fwd: Preference, bwd: Preference) -> float | None:
    """P(chosen better) averaged over the orders that gave a probability (chosen shown first in `fwd`)."""
    probs = [p for p in (fwd.p_x, None if bwd.p_x is None else 1 - bwd.p_x) if p is not None]
    return sum(probs) / len(probs) if probs else None


def bootstrap_ci(scores: Sequence[float], seed: int, resamples: int) -> tuple[float, float]:
    """95% percentile bootstrap of the mean, resampling pairs with replacement."""
    s = np.asarray(scores, dtype=float)
    rng = np.random.default_rng(seed)
    step = max(1, 1_000_000 // len(s))  # bounded memory: at most ~1M indices at a time
    means = [s[rng.integers(0, len(s), size=(min(step, resamples - k), len(s)))].mean(axis=1)
             for k in range(0, resamples, step)]  # fmt: skip
    low, high = np.percentile(np.concatenate(means), [2.5, 97.5])
    return float(low), float(high)


class _Judged(BaseModel):
    """One pair's outcome (internal)."""

    pair: LabelledPair
    verdict: Side
    fwd: Preference  # chosen shown first
    bwd: Preference  # rejected shown first


def figures(rows: list[_Judged], seed: int, resamples: int) -> dict[str, Any]:
    n = len(rows)
    scores = [pair_score(r.verdict, r.pair.tie, r.fwd.winner == r.bwd.winner == "tie") for r in rows]
    lengths = [length_verdict(r.pair) for r in rows]
    baseline = [pair_score(v, r.pair.tie, v == "tie") for v, r in zip(lengths, rows)]
    single = [v.winner for r in rows for v in (r.fwd, r.bwd) if v.winner in ("x", "y")]
    soft, brier = [], []
    for r in rows:
        p = p_chosen(r.fwd, r.bwd)
        if p is not None:
            target = 0.5 if r.pair.tie else 1.0
            soft.append(1 - abs(target - p))  # = P(chosen) on a preference pair
            brier.append((target - p) ** 2)
    ties = sum(r.verdict == "tie" for r in rows)
    agree = sum((r.fwd.winner, r.bwd.winner) in (("x", "y"), ("y", "x"), ("tie", "tie"))
                for r in rows)  # fmt: skip
    accuracy, length_baseline = sum(scores) / n, sum(baseline) / n
    ci_low, ci_high = bootstrap_ci(scores, seed, resamples)
    return dict(
        n=n, accuracy=accuracy, ci_low=ci_low, ci_high=ci_high,
        soft_accuracy=sum(soft) / len(soft) if soft else None,
        brier=sum(brier) / len(brier) if brier else None,
        tie_rate=ties / n, consistency=agree / n,
        p_first=single.count("x") / len(single) if single else None,
        length_baseline=length_baseline, margin_over_length=accuracy - length_baseline,
    )  # fmt: skip


async def evaluate(judge: Judge, pairs: Sequence[Any], *, seed: int = 0, resamples: int = 1000) -> JudgeEval:
    """Every pair judged in both orders (chosen shown first, then rejected shown first); the interval
    is a seeded bootstrap with `resamples` resamples. `pairs` are `LabelledPair`s (or objects with
    the same attributes; `tie` and `category` optional)."""
    if not pairs:
        raise DataError("judge-eval: no pairs to evaluate")
    if resamples < 1:
        raise ValueError("resamples must be at least 1")
    pairs = [p if isinstance(p, LabelledPair) else LabelledPair.model_validate(p, from_attributes=True)
             for p in pairs]  # fmt: skip
    results = await asyncio.gather(
        *(prefer_both_orders(judge, as_prompt(p.prompt, p.columns), p.chosen, p.rejected) for p in pairs)
    )
    rows = [_Judged(pair=p, verdict=both.winner, fwd=a, bwd=b) for p, (both, a, b) in zip(pairs, results)]
    categories: dict[str, list[_Judged]] = {}
    if any(p.category is not None for p in pairs):
        for r in rows:
            categories.setdefault(r.pair.category or NO_CATEGORY, []).append(r)
    return JudgeEval(
        **figures(rows, seed, resamples),
        parse_failures=sum(r.fwd.parse_failures + r.bwd.parse_failures for r in rows),
        judge=judge.type,
        categories={k: Figures(**figures(v, seed, resamples)) for k, v in sorted(categories.items())},
    )


def _num(x: float | None, signed: bool = False) -> str:
    return "-" if x is None else f"{x:+.2f}" if signed else f"{x:.2f}"


def format_table(ev: JudgeEval) -> str:
    """The figures as a text table: the overall row, then one row per category."""
    head = ("", "n", "accuracy [95% ci]", "consistency", "p_first", "ties", "length", "margin",
            "soft acc", "brier")  # fmt: skip
    rows = [head]
    for name, f in [("all", ev), *ev.categories.items()]:
        ci = f"{f.accuracy:.2f} [{f.ci_low:.2f}, {f.ci_high:.2f}]"
        rows.append((name, str(f.n), ci, _num(f.consistency), _num(f.p_first), _num(f.tie_rate),
                     _num(f.length_baseline), _num(f.margin_over_length, signed=True),
                     _num(f.soft_accuracy), _num(f.brier)))  # fmt: skip
    widths = [max(len(r[i]) for r in rows) for i in range(len(head))]
    lines = [f"judge {ev.judge}: {ev.n} pairs, each in both orders; {ev.parse_failures} parse failures"]
    for r in rows:
        cells = [r[0].ljust(widths[0])] + [c.rjust(w) for c, w in zip(r[1:], widths[1:])]
        lines.append("  ".join(cells).rstrip())
    return "\n".join(lines)
