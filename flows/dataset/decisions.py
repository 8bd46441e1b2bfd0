"""Human review decisions: `RUN/review/decisions.jsonl`, one JSON object a line, appended and never edited.

The last line for a pair wins. `build` applies them (flip, tie, drop, accept) and counts them; the review
page and any script or notebook write them with `append_decision`.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import json
import os
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field, ValidationError

from serving.errors import DataError

DECISIONS = Path("review") / "decisions.jsonl"
Verdict = Literal["accept", "flip", "tie", "drop"]
HUMAN = "human"  # the `origin` of a pair a person decided
FLAGS = ("judges disagree", "truncated", "duplicate prompt")  # a binarized row's `flags`: look here first


class PairSnapshot(BaseModel):
    """The pair as the judges ordered it when it was decided (the review page writes it), so a decision
    still says what was compared after its pair has left the dataset (a drop, a tie, a changed recipe)."""

    prompt: list[dict[str, str]]
    chosen: str
    rejected: str
    origin: str
    judge: str
    principle_id: str | None = None


class Decision(BaseModel):
    """One line of decisions.jsonl: `decision` is about the pair in the judges' order (flip: the
    rejected answer is the better one)."""

    pair_id: str = Field(min_length=1)
    decision: Verdict
    note: str | None = None
    time: str | None = None  # ISO 8601, UTC; `append_decision` fills it
    reviewer: str | None = None
    pair: PairSnapshot | None = None  # optional: what was compared (the page always writes it)


class ReviewCounts(BaseModel):
    """What the decisions did to a build (summary.json `build.review`, the card)."""

    decisions: int = 0  # pairs with a decision (the last line per pair)
    accepted: int = 0
    flipped: int = 0
    tied: int = 0  # kept as a tie (keep_ties) or dropped as "reviewer: tie"
    dropped: int = 0
    unmatched: int = 0  # decisions naming a pair this build did not make (the recipe changed)
    unmatched_examples: list[str] = Field(default_factory=list)  # up to 10 pair ids


def decisions_file(run: Path) -> Path:
    return Path(run) / DECISIONS


def read_decisions(path: Path) -> dict[str, Decision]:
    """pair_id -> its latest decision; {} without a file. A malformed line raises `DataError` naming
    file:line (nothing is applied)."""
    path = Path(path)
    if not path.exists():
        return {}
    out: dict[str, Decision] = {}
    with path.open(encoding="utf-8") as f:
        for no, line in enumerate(f, start=1):
            if not line.strip():
                continue
            try:
                d = Decision.model_validate_json(line)
            except ValidationError as exc:
                err = exc.errors()[0]
                where = ".".join(map(str, err["loc"])) or "line"
                why = "not valid JSON" if err["type"].startswith("json") else f"{where}: {err['msg']}"
                raise DataError(
                    f'{path}:{no}: {why} (each line is {{"pair_id": ..., "decision": '
                    '"accept"|"flip"|"tie"|"drop", "note": ...}; fix or delete the line)'
                ) from None
            out.pop(d.pair_id, None)  # keep file order of the latest decisions
            out[d.pair_id] = d
    return out


def digest(decisions: dict[str, Decision]) -> str:
    """What a build depends on: the latest decision per pair (notes and times do not change a dataset)."""
    body = json.dumps(sorted((k, d.decision) for k, d in decisions.items()))
    return hashlib.sha256(body.encode()).hexdigest()[:16]


def append_decision(run: Path, decision: Decision) -> Decision:
    """Append one decision (time filled in) with a single write, so concurrent writers never interleave."""
    d = (
        decision
        if decision.time
        else decision.model_copy(update={"time": dt.datetime.now(dt.UTC).isoformat(timespec="seconds")})
    )
    path = decisions_file(run)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    try:
        os.write(fd, (d.model_dump_json(exclude_none=True) + "\n").encode())
    finally:
        os.close(fd)
    return d


def apply(pair: dict[str, Any], d: Decision, keep_ties: bool) -> dict[str, Any] | None:
    """The pair after a person's decision, or None when it leaves the dataset (drop; a tie without
    keep_ties). A flip swaps the sides, their scores and models (margin stays the judges' distance,
    `p_chosen` becomes 1 - p); a kept tie has margin 0 and `p_chosen` 0.5. Decided pairs get origin "human"."""
    if d.decision == "drop" or (d.decision == "tie" and not keep_ties):
        return None
    out = {**pair, "origin": HUMAN}
    if d.decision == "flip":
        out.update(
            chosen=pair["rejected"], rejected=pair["chosen"], score_chosen=pair["score_rejected"],
            score_rejected=pair["score_chosen"], chosen_model=pair["rejected_model"],
            rejected_model=pair["chosen_model"], margin=abs(pair["margin"]),
            p_chosen=None if pair.get("p_chosen") is None else 1 - pair["p_chosen"],
        )  # fmt: skip
    elif d.decision == "tie":
        out.update(margin=0.0, p_chosen=0.5)
    return out
