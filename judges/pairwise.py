"""`PairwiseJudge`: A/B/tie verdicts with a rationale, judged in both orders to cancel position bias.

Disagreeing verdicts become a tie and count as inconsistent. With logprobs, a soft preference
P(first is better) is read from the verdict token and averaged over both orders.
"""

from __future__ import annotations

import asyncio
import itertools
from typing import Any, Literal

from pydantic import BaseModel, Field

from judges.contract import (
    Completion,
    Judge,
    JudgeConfig,
    Judgement,
    Preference,
    Prompt,
    Side,
    VerdictRow,
    combine_orders,
)
from judges.helpers import choice_probability, clip, parse_json_object, render
from serving.endpoint import RequestRejected

Verdict = Literal["A", "B", "tie"]


class OrderedVerdict(BaseModel):
    verdict: Verdict | None = None  # in the shown order
    rationale: str = ""
    p_a: float | None = Field(default=None, ge=0, le=1)
    error: str | None = None


class PairVerdict(BaseModel):
    """The verdict on (x, y): `winner` is "x", "y" or "tie"; `p_x` = soft P(x better)."""

    winner: Literal["x", "y", "tie"]
    consistent: bool
    p_x: float | None = None
    forward: OrderedVerdict  # x shown as A
    backward: OrderedVerdict  # y shown as A
    parse_failures: int = 0


VERDICT_SCHEMA: dict[str, Any] = {
    "type": "json_schema",
    "json_schema": {
        "name": "verdict",
        "strict": True,
        "schema": {
            "type": "object",
            "properties": {
                "verdict": {"type": "string", "enum": ["A", "B", "tie"]},
                "rationale": {"type": "string", "maxLength": 200},
            },
            "required": ["verdict", "rationale"],
            "additionalProperties": False,
        },
    },
}


def parse_verdict(text: str) -> OrderedVerdict:
    obj = parse_json_object(text)
    if obj is None:
        stripped = text.strip().strip('"').strip()
        if stripped in ("A", "B", "tie"):
            return OrderedVerdict(verdict=stripped)  # type: ignore[arg-type]
        return OrderedVerdict(error="unparseable judge output")
    verdict = str(obj.get("verdict", "")).strip()
    if verdict.lower() == "tie":
        verdict = "tie"
    if verdict not in ("A", "B", "tie"):
        return OrderedVerdict(error=f"verdict {verdict!r} is not A, B or tie")
    return OrderedVerdict(verdict=verdict, rationale=str(obj.get("rationale", ""))[:500])  # type: ignore[arg-type]


def combine(forward: OrderedVerdict, backward: OrderedVerdict) -> PairVerdict:
    """x is A in `forward` and B in `backward`. Disagreement (or a failure) is a tie."""
    both = combine_orders(_side(forward.verdict), _side(backward.verdict), forward.p_a, backward.p_a)
    return PairVerdict(winner=both.winner, consistent=both.consistent, p_x=both.p_x, forward=forward,
                       backward=backward, parse_failures=both.failures)  # fmt: skip


def _side(verdict: Verdict | None) -> Side | None:
    """A shown-order letter in the one vocabulary: A (shown first) is x."""
    return {"A": "x", "B": "y", "tie": "tie"}.get(verdict or "")  # type: ignore[return-value]


class PairwiseConfig(JudgeConfig):
    type: Literal["pairwise"] = "pairwise"
    max_tokens: int = Field(default=128, ge=16)
    structured: bool = Field(default=True, description="force the JSON verdict with response_format")
    logprobs: bool = Field(default=True, description="soft preference from the verdict's logprobs")
    compare: Literal["auto", "emitted", "all"] = Field(
        default="auto",
        description="which pairs of a prompt's completions: `emitted` only the pairs binarization will make "
        "from the ranking judge's scores (both orders), `all` every pair; `auto`: emitted when another judge "
        "ranks, all when this one does",
    )


class PairwiseJudge(Judge):
    """Compares two completions of a prompt in both orders: every two, or (another judge ranking) only the
    pairs binarization will emit."""

    type = "pairwise"
    config_class = PairwiseConfig
    templates = ("pairwise.jinja2",)

    def __init__(
        self, config: PairwiseConfig | None = None, client: Any = None, allow_truncated_chosen: bool = False
    ) -> None:
        super().__init__(config or PairwiseConfig(), client, allow_truncated_chosen)
        self.cfg: PairwiseConfig = self.config  # type: ignore[assignment]

    def requests_per_prompt(self, n: int, pairs: int | None = None) -> int:
        return 2 * (n * (n - 1) // 2 if pairs is None else pairs)

    def follows_ranking(self, ranking_key: str | None) -> bool:
        if self.cfg.compare == "auto":
            return ranking_key is not None and ranking_key != self.config.key
        return self.cfg.compare == "emitted"

    def messages(self, prompt: str, a: str, b: str) -> list[dict[str, str]]:
        text = render(self.templates[0], prompt=clip(prompt), response_a=clip(a), response_b=clip(b))
        return [{"role": "user", "content": text}]

    async def judge_order(self, prompt: str, a: str, b: str) -> OrderedVerdict:
        lp = self.cfg.logprobs
        try:
            res = await self.client.chat(
                self.messages(prompt, a, b), temperature=self.cfg.temperature,
                max_tokens=min(self.cfg.max_tokens, 128),
                response_format=VERDICT_SCHEMA if self.cfg.structured else None,
                logprobs=lp, top_logprobs=5 if lp else None,
            )  # fmt: skip
        except RequestRejected as exc:
            return OrderedVerdict(error=f"judge rejected the request: {str(exc)[:120]}")
        choice = res.choices[0]
        verdict = parse_verdict(choice.text)
        if lp:
            verdict.p_a = choice_probability(choice.logprobs, ("A", "B"))
        return verdict

    async def compare(self, prompt: str, x: str, y: str) -> PairVerdict:
        forward, backward = await asyncio.gather(
            self.judge_order(prompt, x, y), self.judge_order(prompt, y, x)
        )
        return combine(forward, backward)

    async def judge(
        self, prompt: Prompt, completions: list[Completion], pairs: list[tuple[int, int]] | None = None
    ) -> Judgement:
        """`pairs` (every pair when None) in both orders; a completion's score is its share of wins (ties
        count half), None for one that played no pair."""
        responses = [c.response for c in completions]
        if pairs is None:
            pairs = list(itertools.combinations(range(len(responses)), 2))
        verdicts = await asyncio.gather(
            *(self.compare(prompt.prompt, responses[i], responses[j]) for i, j in pairs)
        )
        rows = [VerdictRow(i=i, j=j, winner=v.winner, consistent=v.consistent, p_x=v.p_x)
                for (i, j), v in zip(pairs, verdicts)]  # fmt: skip
        return Judgement(
            scores=win_rates(rows, len(responses)), verdicts=rows, requests=2 * len(pairs),
            parse_failures=sum(v.parse_failures for v in verdicts),
            detail={"comparisons": len(rows), "consistent": sum(v.consistent for v in rows),
                    "ties": sum(v.winner == "tie" for v in rows)},
        )  # fmt: skip

    async def prefer(self, prompt: Prompt, first: str, second: str) -> Preference:
        v = await self.judge_order(prompt.prompt, first, second)
        winner = _side(v.verdict)
        return Preference(winner=winner, p_x=v.p_a, parse_failures=int(winner is None))

    def figures(self, t: dict[str, Any]) -> dict[str, Any]:
        f = super().figures(t)
        n = int(t.get("comparisons", 0))
        pc = t.get("consistent", 0) / n if n else None
        tr = t.get("ties", 0) / n if n else None
        f.update(comparisons=n, position_consistency=pc, tie_rate=tr)
        f["quality"] = (f"position consistency {pc:.2f}, tie rate {tr:.2f} over {n} comparisons"
                        if pc is not None and tr is not None else "no comparisons")  # fmt: skip
        f["headline"] = {"position consistency": round(pc, 2)} if pc is not None else {}
        return f


def win_rates(verdicts: list[VerdictRow], n: int) -> list[float | None]:
    """Each completion's share of pairwise wins (ties count half); None when it played no pair."""
    wins, games = [0.0] * n, [0] * n
    for v in verdicts:
        games[v.i] += 1
        games[v.j] += 1
        wins[v.i] += {"x": 1.0, "y": 0.0, "tie": 0.5}[v.winner]
        wins[v.j] += {"x": 0.0, "y": 1.0, "tie": 0.5}[v.winner]
    return [wins[k] / games[k] if games[k] else None for k in range(n)]
