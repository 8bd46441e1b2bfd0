"""`rlaif judge-eval`: measure any registered judge on human-labelled pairs, each shown in both orders."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import BaseModel

from judges.contract import Judge, both_orders
from serving.errors import DataError


class LabelledPair(BaseModel):
    prompt: str
    chosen: str
    rejected: str


class JudgeEval(BaseModel):
    """A judge on labelled pairs. A pair counts as won only when both orders pick `chosen`; a
    disagreement between the orders is a tie (half a point)."""

    n: int
    accuracy: float | None
    position_consistency: float | None  # share of pairs where both orders pick the same answer
    tie_rate: float | None
    p_first: float | None = None  # share of decided single-order verdicts won by the answer shown first
    soft_accuracy: float | None = None  # mean P(chosen better) from logprobs, both orders averaged
    parse_failures: int
    judge: str


def load_pairs(path: Path) -> list[LabelledPair]:
    """Read a JSONL of {prompt, chosen, rejected}; errors name the line."""
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
        out.append(LabelledPair(prompt=rec["prompt"], chosen=rec["chosen"], rejected=rec["rejected"]))
    if not out:
        raise DataError(f"{path}: no pairs")
    return out


async def evaluate(judge: Judge, pairs: list[LabelledPair]) -> JudgeEval:
    """Every pair judged in both orders (chosen shown first, then rejected shown first)."""
    results = await asyncio.gather(*(both_orders(judge, p.prompt, p.chosen, p.rejected) for p in pairs))
    n = len(results)
    firsts = decided = 0
    soft: list[float] = []
    for _, a, b in results:  # a: chosen shown first; b: rejected shown first
        for v in (a, b):
            if v.winner in ("first", "second"):
                decided += 1
                firsts += v.winner == "first"
        probs = [x for x in (a.p_first, None if b.p_first is None else 1 - b.p_first) if x is not None]
        if probs:
            soft.append(sum(probs) / len(probs))
    winners = [w for w, _, _ in results]  # x = chosen
    return JudgeEval(
        n=n, accuracy=(winners.count("x") + 0.5 * winners.count("tie")) / n,
        position_consistency=(n - winners.count("tie")) / n, tie_rate=winners.count("tie") / n,
        p_first=firsts / decided if decided else None,
        soft_accuracy=sum(soft) / len(soft) if soft else None,
        parse_failures=sum(a.parse_failures + b.parse_failures for _, a, b in results), judge=judge.type,
    )  # fmt: skip
