"""`rlaif judge-eval`: measure any registered judge on human-labelled pairs, each shown in both orders."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

from pydantic import BaseModel

from judges.contract import Judge, Preference
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

    async def one(p: LabelledPair) -> tuple[Preference, Preference]:
        return await asyncio.gather(judge.prefer(p.prompt, p.chosen, p.rejected),
                                    judge.prefer(p.prompt, p.rejected, p.chosen))  # fmt: skip

    results = await asyncio.gather(*(one(p) for p in pairs))
    n = len(results)
    score = consistent = ties = firsts = decided = 0.0
    soft: list[float] = []
    for a, b in results:  # a: chosen shown first; b: rejected shown first
        pick_a = {"first": "chosen", "second": "rejected"}.get(a.winner or "")
        pick_b = {"first": "rejected", "second": "chosen"}.get(b.winner or "")
        agree = pick_a is not None and pick_a == pick_b
        consistent += agree
        ties += not agree
        score += (pick_a == "chosen") if agree else 0.5
        for v in (a, b):
            if v.winner in ("first", "second"):
                decided += 1
                firsts += v.winner == "first"
        probs = [x for x in (a.p_first, None if b.p_first is None else 1 - b.p_first) if x is not None]
        if probs:
            soft.append(sum(probs) / len(probs))
    return JudgeEval(
        n=n, accuracy=score / n, position_consistency=consistent / n, tie_rate=ties / n,
        p_first=firsts / decided if decided else None,
        soft_accuracy=sum(soft) / len(soft) if soft else None,
        parse_failures=sum(a.parse_failures + b.parse_failures for a, b in results), judge=judge.type,
    )  # fmt: skip
