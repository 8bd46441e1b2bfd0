"""`rlaif judge-eval`: measure a judge on human-labelled pairs (accuracy, position consistency)."""

from __future__ import annotations

import asyncio
import json
import random
from pathlib import Path

from pydantic import BaseModel

from judges.pairwise import PairwiseJudge
from judges.ultrafeedback import UltraFeedbackJudge
from serving.client import LLMClient
from serving.errors import DataError


class LabelledPair(BaseModel):
    prompt: str
    chosen: str
    rejected: str


class JudgeEval(BaseModel):
    n: int
    accuracy: float | None
    position_consistency: float | None
    tie_rate: float | None
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


async def evaluate(client: LLMClient, pairs: list[LabelledPair], kind: str, seed: int = 0) -> JudgeEval:
    """Each pair shown in a random order; both orders judged to measure position consistency."""
    rng = random.Random(seed)
    flips = [rng.random() < 0.5 for _ in pairs]

    if kind == "pairwise":
        judge = PairwiseJudge(client)

        async def one(p: LabelledPair, flip: bool) -> tuple[float, bool, bool, int]:
            x, y = (p.rejected, p.chosen) if flip else (p.chosen, p.rejected)
            v = await judge.compare(p.prompt, x, y)
            chosen_side = "y" if flip else "x"
            score = 0.5 if v.winner == "tie" else float(v.winner == chosen_side)
            return score, v.consistent, v.winner == "tie", v.parse_failures

    else:
        uf = UltraFeedbackJudge(client, max_tokens=256)

        async def one(p: LabelledPair, flip: bool) -> tuple[float, bool, bool, int]:
            shown = [p.rejected, p.chosen] if flip else [p.chosen, p.rejected]
            a, b = await asyncio.gather(uf.judge("eval-a", p.prompt, shown),
                                        uf.judge("eval-b", p.prompt, shown[::-1]))  # fmt: skip
            sa = [c.fine_grained_score for c in a.completions]
            sb = [c.fine_grained_score for c in b.completions][::-1]
            fails = a.parse_failures + b.parse_failures

            def pref(s: list[float | None]) -> int | None:  # index preferred, None = tie/unknown
                if None in s or s[0] == s[1]:
                    return None
                return 0 if s[0] > s[1] else 1  # type: ignore[operator]

            pa, pb = pref(sa), pref(sb)
            consistent = pa is not None and pa == pb
            winner = pa if consistent else None
            chosen_idx = 1 if flip else 0
            score = 0.5 if winner is None else float(winner == chosen_idx)
            return score, consistent, winner is None, fails

    results = await asyncio.gather(*(one(p, f) for p, f in zip(pairs, flips)))
    n = len(results)
    return JudgeEval(
        n=n,
        accuracy=sum(r[0] for r in results) / n,
        position_consistency=sum(r[1] for r in results) / n,
        tie_rate=sum(r[2] for r in results) / n,
        parse_failures=sum(r[3] for r in results),
        judge=kind,
    )
