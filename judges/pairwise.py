"""`PairwiseJudge`: A/B/tie verdicts with a rationale, judged in both orders to cancel position bias.

Disagreeing verdicts become a tie and count as inconsistent. With logprobs, a soft preference
P(first is better) is read from the verdict token and averaged over both orders.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, Field

from judges.base import choice_probability, clip, parse_json_object, render
from serving.client import LLMClient, RequestRejected

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
    f = {"A": "x", "B": "y", "tie": "tie"}.get(forward.verdict or "")
    b = {"A": "y", "B": "x", "tie": "tie"}.get(backward.verdict or "")
    failures = int(f is None) + int(b is None)
    consistent = f is not None and f == b
    winner = f if consistent else "tie"
    probs = [p for p in (forward.p_a, None if backward.p_a is None else 1 - backward.p_a)
             if p is not None]  # fmt: skip
    return PairVerdict(
        winner=winner,  # type: ignore[arg-type]
        consistent=consistent,
        p_x=sum(probs) / len(probs) if probs else None,
        forward=forward,
        backward=backward,
        parse_failures=failures,
    )


class PairwiseJudge:
    """Compares two responses in both orders."""

    template = "pairwise.jinja2"

    def __init__(
        self,
        client: LLMClient,
        max_tokens: int = 128,
        temperature: float = 0.0,
        structured: bool = True,
        logprobs: bool = True,
    ) -> None:
        self.client = client
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.structured = structured
        self.logprobs = logprobs

    def messages(self, prompt: str, a: str, b: str) -> list[dict[str, str]]:
        text = render(self.template, prompt=clip(prompt), response_a=clip(a), response_b=clip(b))
        return [{"role": "user", "content": text}]

    async def judge_order(self, prompt: str, a: str, b: str) -> OrderedVerdict:
        try:
            res = await self.client.chat(
                self.messages(prompt, a, b), temperature=self.temperature,
                max_tokens=self.max_tokens,
                response_format=VERDICT_SCHEMA if self.structured else None,
                logprobs=self.logprobs, top_logprobs=5 if self.logprobs else None,
            )  # fmt: skip
        except RequestRejected as exc:
            return OrderedVerdict(error=f"judge rejected the request: {str(exc)[:120]}")
        choice = res.choices[0]
        verdict = parse_verdict(choice.text)
        if self.logprobs:
            verdict.p_a = choice_probability(choice.logprobs, ("A", "B"))
        return verdict

    async def compare(self, prompt: str, x: str, y: str) -> PairVerdict:
        forward, backward = await asyncio.gather(
            self.judge_order(prompt, x, y), self.judge_order(prompt, y, x)
        )
        return combine(forward, backward)
