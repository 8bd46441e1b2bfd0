"""The feedback contract: every kind of feedback (ratings, pairwise verdicts, a reward model, constitution
critique and labels, a verifier) is one `Judge` subclass with its own `JudgeConfig`, and returns typed
records. Engine, build, card, judge-eval and eval-policy only call these methods, never ask a judge's type.
"""

from __future__ import annotations

import asyncio
import copy
import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.served import ServedModel

Side = Literal["x", "y", "tie"]
"""The one verdict vocabulary: of two answers (x, y), x is the first given (shown first, or completion i
of a pair (i, j)), y the second; "tie" when neither wins."""


class JudgeConfig(BaseModel):
    """What every judge entry of a recipe has; a judge type subclasses it with its own fields."""

    model_config = ConfigDict(extra="forbid")

    type: str
    name: str | None = Field(default=None, description="column prefix; defaults to the type")
    judge: ServedModel | None = Field(default=None, description="defaults to the policy endpoint")
    max_tokens: int = Field(default=512, ge=16)
    temperature: float = Field(default=0.0, ge=0)
    seed: int = 0

    @property
    def key(self) -> str:
        return self.name or self.type

    def resolved(self, base: Path | None) -> JudgeConfig:
        """This config with relative file paths resolved against the recipe's folder (`base`)."""
        return self


# -- what a judge is given ---------------------------------------------------------------------------
class Prompt(BaseModel):
    """One prompt: its id, its text (the first user turn), the chat, where it came from, and the prompt
    set's other columns that some judge asked for (`Judge.columns`, e.g. a reference answer)."""

    prompt_id: str
    prompt: str
    messages: list[dict[str, str]]
    source: str = ""
    columns: dict[str, Any] = Field(default_factory=dict)


class SampleParams(BaseModel):
    """How one completion was sampled (the row's `sampling`)."""

    temperature: float
    top_p: float
    max_tokens: int
    seed: int | None


class Completion(BaseModel):
    """One sampled answer to a prompt."""

    sample_index: int
    model: str
    response: str
    sampling: SampleParams
    finish_reason: str | None = None
    prompt_tokens: int = 0
    completion_tokens: int = 0

    @property
    def cut(self) -> bool:
        """Cut at max_tokens (never `chosen` unless the recipe allows it)."""
        return self.finish_reason == "length"


# -- what a judge returns ----------------------------------------------------------------------------
class VerdictRow(BaseModel):
    """A verdict on completions i and j (indices into the judged list): `winner` x = i, y = j."""

    i: int
    j: int
    winner: Side
    consistent: bool
    p_x: float | None = None


class CritiqueNote(BaseModel):
    """A critique and revision of one completion (the UltraFeedback row's critique columns)."""

    principle_id: str | None = None
    critique: str | None = None
    revision: str | None = None


class ExtraPair(BaseModel):
    """A chosen/rejected pair a judge makes itself (a revision over its original, a labelled pair), on top
    of the pairs binarisation makes from scores. `margin` is in 0..1."""

    chosen: str
    rejected: str
    chosen_model: str
    rejected_model: str
    score_chosen: float
    score_rejected: float
    margin: float
    p_chosen: float | None = None
    judge: str  # e.g. "constitution:critique"
    origin: str  # the ledger account and the card section, e.g. "constitution"
    principle_id: str | None = None
    principle_sha256: str | None = None


class Judgement(BaseModel):
    """One judge's record for one prompt, in the order the completions were given."""

    scores: list[float | None]  # what binarisation ranks by; None = no score
    annotations: list[dict[str, Any]] | None = None  # per completion, per aspect (UltraFeedback style)
    notes: list[str | None] | None = None  # per completion: why it got its score (e.g. a verifier's reason)
    critiques: list[CritiqueNote | None] | None = None  # per completion
    verdicts: list[VerdictRow] = Field(default_factory=list)  # pairwise verdicts that gate pairs
    pairs: list[ExtraPair] = Field(default_factory=list)  # pairs the judge made itself
    candidates: int = 0  # pairs the judge tried to make: `pairs` + `dropped`
    dropped: dict[str, int] = Field(default_factory=dict)  # candidates that gave no pair, by reason
    requests: int = 0
    parse_failures: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)  # judge-specific numbers for `tally` (summed)


class Preference(BaseModel):
    """One shown order of two answers (judge-eval): who won as shown (x = shown first), P(x better)."""

    winner: Side | None  # None: the judge gave no usable answer
    p_x: float | None = None
    parse_failures: int = 0


class BothOrders(BaseModel):
    """x vs y judged in both orders."""

    winner: Side
    consistent: bool  # both orders gave the same answer (the same side, or tie in both)
    p_x: float | None = None  # mean P(x better) over the orders that gave one
    failures: int = 0  # orders without a usable answer


def flip(side: Side | None) -> Side | None:
    """The same verdict seen from the other order."""
    return {"x": "y", "y": "x", "tie": "tie"}.get(side or "")  # type: ignore[return-value]


def combine_orders(fwd: Side | None, bwd: Side | None, p_fwd: float | None = None, p_bwd: float | None = None,
                   by_probability: bool = False) -> BothOrders:  # fmt: skip
    """The one both-orders rule. `fwd`: the verdict with x shown first; `bwd`: with y shown first (in
    shown terms: its "x" is y). A side wins when both orders pick it, else tie; with `by_probability`
    the mean P(x better) decides when there is one."""
    b = flip(bwd)
    consistent = fwd is not None and fwd == b
    probs = [p for p in (p_fwd, None if p_bwd is None else 1 - p_bwd) if p is not None]
    p_x = sum(probs) / len(probs) if probs else None
    if by_probability and p_x is not None:
        winner: Side = "x" if p_x > 0.5 else "y" if p_x < 0.5 else "tie"
    else:
        winner = fwd if consistent and fwd is not None else "tie"
    return BothOrders(
        winner=winner, consistent=consistent, p_x=p_x, failures=int(fwd is None) + int(b is None)
    )


async def prefer_both_orders(
    judge: Judge, prompt: Prompt, x: str, y: str
) -> tuple[BothOrders, Preference, Preference]:
    """x vs y shown both ways through `judge.prefer`: the combined verdict and the two single orders."""
    fwd, bwd = await asyncio.gather(judge.prefer(prompt, x, y), judge.prefer(prompt, y, x))
    return combine_orders(fwd.winner, bwd.winner), fwd, bwd


def as_prompt(text: str, columns: dict[str, Any] | None = None) -> Prompt:
    """A bare prompt text as a `Prompt` (judge-eval pairs, eval-policy): id = hash of the text."""
    pid = hashlib.sha256(text.encode()).hexdigest()[:16]
    return Prompt(
        prompt_id=pid, prompt=text, messages=[{"role": "user", "content": text}], columns=columns or {}
    )


def as_completions(texts: list[str], model: str = "") -> list[Completion]:
    """Bare answers as completions (judge-eval shows a judge two answers)."""
    params = SampleParams(temperature=0.0, top_p=1.0, max_tokens=0, seed=None)
    return [Completion(sample_index=k, model=model, response=t, sampling=params) for k, t in enumerate(texts)]


def add(t: dict[str, Any], key: str, n: float = 1) -> None:
    t[key] = t.get(key, 0) + n


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Deep sum of tallies (numbers add, dicts merge, other values are taken from `part`)."""
    for k, v in part.items():
        if isinstance(v, dict):
            merge(into.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v
        else:
            into[k] = v
    return into


class Judge(ABC):
    """A judge bound to a chat client (None for judges that run locally)."""

    type: ClassVar[str]
    config_class: ClassVar[type[JudgeConfig]] = JudgeConfig
    uses_endpoint: ClassVar[bool] = True  # False: scored locally, no server needed
    ranks_by_default: ClassVar[bool] = False  # the default `binarize.score` when no judge is named
    gives_scores: ClassVar[bool] = True  # False: no score column, never ranks (it makes `pairs` itself)
    gives_notes: ClassVar[bool] = False  # True: `Judgement.notes` fill a per-completion column
    templates: ClassVar[tuple[str, ...]] = ()  # files under judges/templates/ that shape requests
    origin: ClassVar[str] = "judge"  # the ledger account its `Judgement.pairs` are counted under

    def __init__(self, config: JudgeConfig, client: Any = None, allow_truncated_chosen: bool = False) -> None:
        self.config = config
        self.client = client
        self.allow_truncated_chosen = allow_truncated_chosen  # `lints.allow_truncated_chosen`

    def bind(self, client: Any) -> Judge:
        """This judge talking through `client` (a shard's journalled client); built once, bound per shard."""
        out = copy.copy(self)
        out.client = client
        return out

    @classmethod
    def stage_of(cls, config: JudgeConfig) -> str:
        """The stage a judge of this config journals and counts its requests under."""
        return f"judge:{config.key}"

    @property
    def stage(self) -> str:
        return type(self).stage_of(self.config)

    # -- what the engine calls -------------------------------------------------------------------
    @abstractmethod
    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        """Judge all completions of one prompt (requests in flight together). A judge that
        `follows_ranking` is called with `pairs=`: the (chosen, rejected) positions binarization will emit."""

    @abstractmethod
    def requests_per_prompt(self, n: int) -> int:
        """Requests `judge` sends for a prompt with n completions (the progress total). A judge that
        `follows_ranking` also takes `pairs=`: how many pairs it will be given."""

    def follows_ranking(self, ranking_key: str | None) -> bool:
        """True when this judge runs after the ranking judge (`ranking_key`) of the same prompt and judges
        only the pairs binarization will emit from its scores, instead of every pair."""
        return False

    def columns(self) -> list[str]:
        """Columns of the prompt set this judge reads from `Prompt.columns` (a missing one is refused)."""
        return []

    def aspects(self) -> list[str]:
        """Per-aspect annotation columns this judge fills (UltraFeedback-style rows)."""
        return []

    def longest_chain(self) -> int:
        """Tokens of the longest chain of its requests for one prompt (critique then revision: two)."""
        return int(self.config.max_tokens)

    def fingerprint(self) -> str:
        """What this judge's answers depend on: its config (not its endpoint) and its templates."""
        from judges.helpers import TEMPLATES

        h = hashlib.sha256(self.config.model_dump_json(exclude={"judge", "name"}).encode())
        for name in self.templates:
            for p in (
                sorted((TEMPLATES / name).rglob("*")) if (TEMPLATES / name).is_dir() else [TEMPLATES / name]
            ):
                h.update(p.read_bytes())
        for p in self.extra_files():
            h.update(p.read_bytes() if p.stat().st_size < 50_000_000 else str(p.stat().st_mtime_ns).encode())
        return h.hexdigest()[:16]

    def extra_files(self) -> list[Path]:
        """Files besides templates whose content shapes the answers (e.g. a local model)."""
        return []

    def provenance(self) -> dict[str, str]:
        """What the datasets' provenance records about this judge besides its type and model."""
        return {}

    def model_name(self, endpoint_models: list[str]) -> str:
        return endpoint_models[0] if endpoint_models else ""

    # -- judge-eval ------------------------------------------------------------------------------
    async def prefer(self, prompt: Prompt, first: str, second: str) -> Preference:
        """Which of two answers wins when shown in this order. Default: compare `judge` scores."""
        key = hashlib.sha256(json.dumps([prompt.prompt, first, second]).encode()).hexdigest()[:16]
        j = await self.judge(prompt.model_copy(update={"prompt_id": key}), as_completions([first, second]))
        a, b = (j.scores + [None, None])[:2]
        if a is None or b is None:
            return Preference(winner=None, parse_failures=j.parse_failures)
        return Preference(winner="tie" if a == b else "x" if a > b else "y", parse_failures=j.parse_failures)

    # -- figures for the card --------------------------------------------------------------------
    def tally(self, t: dict[str, Any], j: Judgement) -> None:
        """Add one prompt's figures into `t` (numbers only: shards' tallies are summed)."""
        add(t, "requests", j.requests)
        add(t, "parse_failures", j.parse_failures)
        add(t, "scored", sum(s is not None for s in j.scores))
        add(t, "unscored", sum(s is None for s in j.scores))
        merge(t, j.detail)
        if j.candidates:  # pairs it made itself: the ledger's account `origin`
            t["origin"] = self.origin
            add(t, "candidates", j.candidates)
            merge(t.setdefault("dropped", {}), j.dropped)

    def figures(self, t: dict[str, Any]) -> dict[str, Any]:
        """Card/summary figures from the summed tallies: `quality` is the card's one-line summary,
        `headline` the figures the closing table shows, and an optional `section` (markdown) goes on
        the card as it is."""
        return {
            "requests": int(t.get("requests", 0)),
            "parse_failures": int(t.get("parse_failures", 0)),
            "quality": f"{int(t.get('scored', 0))} scores, {int(t.get('unscored', 0))} missing",
            "headline": {},
        }
