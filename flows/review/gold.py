"""`rlaif review RUN --export-gold FILE`: the reviewer's decisions as judge-eval pairs, so `rlaif judge-eval
--pairs FILE` and a recipe's `gate:` measure a judge on the user's own data."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
from pydantic import BaseModel

from flows.dataset.atomic_files import atomic_write_text
from flows.review.index import RunIndex


class GoldExport(BaseModel):
    path: str
    pairs: int = 0  # lines written: accept and flip (a preference), tie (tie: true)
    dropped: int = 0  # drop decisions: not a preference, not written
    missing: int = 0  # decisions without a snapshot whose pair this build no longer has


def prompt_text(messages: list[dict[str, str]]) -> str:
    """A one-turn chat is its user message; a longer one is written out turn by turn."""
    if len(messages) == 1:
        return messages[0]["content"]
    return "\n\n".join(f"{m['role']}: {m['content']}" for m in messages)


def export_gold(ix: RunIndex, path: Path) -> GoldExport:
    """One line per decided pair: {prompt, chosen, rejected, tie, category, pair_id, messages}; `chosen` is
    the answer the reviewer preferred. Written atomically."""
    res = GoldExport(path=str(path))
    decisions = list(ix.decisions.values())
    rows = ix.rows_of([d.pair_id for d in decisions])
    lines = []
    for d, k in zip(decisions, rows):
        if d.decision == "drop":
            res.dropped += 1
            continue
        if d.pair is not None:
            msgs, a, b = d.pair.prompt, d.pair.chosen, d.pair.rejected
            category = d.pair.principle_id or d.pair.origin
        elif k >= 0:
            r = ix.rows(np.array([k]))[0]  # the judges' order
            msgs, a, b = r["prompt"], r["chosen"], r["rejected"]
            category = r["principle_id"] or r["origin"]
        else:
            res.missing += 1
            continue
        chosen, rejected = (b, a) if d.decision == "flip" else (a, b)
        lines.append(json.dumps({"prompt": prompt_text(msgs), "chosen": chosen, "rejected": rejected,
                                 "tie": d.decision == "tie", "category": category, "pair_id": d.pair_id,
                                 "messages": msgs}, ensure_ascii=False))  # fmt: skip
    res.pairs = len(lines)
    atomic_write_text(Path(path), "".join(line + "\n" for line in lines))
    return res
