"""The judge contract: every judge type is one `Judge` subclass with its own `JudgeConfig`.

Stages, build, card and judge-eval only call these methods; none of them looks at a judge's type.
"""

from __future__ import annotations

import hashlib
import json
from abc import ABC, abstractmethod
from pathlib import Path
from typing import Any, ClassVar, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.served import ServedModel

Winner = Literal["x", "y", "tie"]


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


class VerdictRow(BaseModel):
    """A verdict on completions i and j (indices into the judged list): `winner` x = i, y = j."""

    i: int
    j: int
    winner: Winner
    consistent: bool
    p_x: float | None = None


class Judgement(BaseModel):
    """One judge's record for one prompt, in the order the completions were given."""

    scores: list[float | None]  # what binarisation ranks by; None = no score
    annotations: list[dict[str, Any]] | None = None  # per completion, per aspect (UltraFeedback style)
    verdicts: list[VerdictRow] = Field(default_factory=list)  # pairwise verdicts that gate pairs
    requests: int = 0
    parse_failures: int = 0
    detail: dict[str, Any] = Field(default_factory=dict)  # judge-specific figures for `tally`


class Preference(BaseModel):
    """One shown order of two answers (judge-eval): who won as shown, and P(first better)."""

    winner: Literal["first", "second", "tie"] | None  # None: the judge gave no usable answer
    p_first: float | None = None
    parse_failures: int = 0


async def both_orders(judge: Judge, prompt: str, x: str, y: str) -> tuple[Winner, Preference, Preference]:
    """x vs y shown both ways: "x"/"y" only when both orders pick it, else "tie"; and the two
    single-order preferences (x shown first, then y shown first)."""
    import asyncio

    fwd, bwd = await asyncio.gather(judge.prefer(prompt, x, y), judge.prefer(prompt, y, x))
    pick_f = {"first": "x", "second": "y"}.get(fwd.winner or "")
    pick_b = {"first": "y", "second": "x"}.get(bwd.winner or "")
    return (pick_f if pick_f is not None and pick_f == pick_b else "tie"), fwd, bwd  # type: ignore[return-value]


def add(t: dict[str, Any], key: str, n: float = 1) -> None:
    t[key] = t.get(key, 0) + n


class Judge(ABC):
    """A judge bound to a chat client (None for judges that run locally)."""

    type: ClassVar[str]
    config_class: ClassVar[type[JudgeConfig]] = JudgeConfig
    uses_endpoint: ClassVar[bool] = True  # False: scored locally, no server needed
    ranks_by_default: ClassVar[bool] = False  # the default `binarize.score` when no judge is named
    templates: ClassVar[tuple[str, ...]] = ()  # files under judges/templates/ that shape requests

    def __init__(self, config: JudgeConfig, client: Any = None) -> None:
        self.config = config
        self.client = client

    # -- what the engine calls -------------------------------------------------------------------
    @abstractmethod
    async def judge(self, prompt_id: str, prompt: str, responses: list[str],
                    messages: list[dict[str, str]] | None = None) -> Judgement:  # fmt: skip
        """Judge all completions of one prompt (requests in flight together); `messages` is the
        prompt as a chat when the judge wants more than its text."""

    @abstractmethod
    def requests_per_prompt(self, n: int) -> int:
        """Requests `judge` sends for a prompt with n completions (the progress total)."""

    def aspects(self) -> list[str]:
        """Per-aspect annotation columns this judge fills (UltraFeedback-style rows)."""
        return []

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

    def model_name(self, endpoint_models: list[str]) -> str:
        return endpoint_models[0] if endpoint_models else ""

    # -- judge-eval ------------------------------------------------------------------------------
    async def prefer(self, prompt: str, first: str, second: str) -> Preference:
        """Which of two answers wins when shown in this order. Default: compare `judge` scores."""
        key = hashlib.sha256(json.dumps([prompt, first, second]).encode()).hexdigest()[:16]
        j = await self.judge(key, prompt, [first, second])
        a, b = j.scores
        if a is None or b is None:
            return Preference(winner=None, parse_failures=j.parse_failures)
        winner = "tie" if a == b else ("first" if a > b else "second")
        return Preference(winner=winner, parse_failures=j.parse_failures)  # type: ignore[arg-type]

    # -- figures for the card --------------------------------------------------------------------
    def tally(self, t: dict[str, Any], j: Judgement) -> None:
        """Add one prompt's figures into `t` (numbers only: shards' tallies are summed)."""
        add(t, "requests", j.requests)
        add(t, "parse_failures", j.parse_failures)
        add(t, "scored", sum(s is not None for s in j.scores))
        add(t, "unscored", sum(s is None for s in j.scores))

    def figures(self, t: dict[str, Any]) -> dict[str, Any]:
        """Card/summary figures from the summed tallies; `quality` is the card's one-line summary and
        `headline` the figures the closing table shows."""
        return {
            "requests": int(t.get("requests", 0)),
            "parse_failures": int(t.get("parse_failures", 0)),
            "quality": f"{int(t.get('scored', 0))} scores, {int(t.get('unscored', 0))} missing",
            "headline": {},
        }
