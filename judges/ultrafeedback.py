"""`UltraFeedbackJudge`: rates all completions of a prompt on the four UltraFeedback aspects.

Input: a prompt and its completions. Output: per completion, per aspect, `AspectRating`
(rating 1..5 or None with an error reason) and `fine_grained_score` (mean of non-null ratings).
One request per (prompt, aspect) rates every completion together, shown in a seeded shuffled order.
"""

from __future__ import annotations

import asyncio
from typing import Any

from pydantic import BaseModel, Field

from judges.base import clip, parse_json_object, render, scan_ratings, seeded_order
from serving.client import LLMClient, RequestRejected

ASPECTS: dict[str, str] = {
    "instruction_following": "Instruction following",
    "honesty": "Honesty",
    "truthfulness": "Truthfulness",
    "helpfulness": "Helpfulness",
}


class AspectRating(BaseModel):
    rating: int | None = Field(default=None, ge=1, le=5)
    rationale: str = ""
    error: str | None = None


class CompletionJudgement(BaseModel):
    annotations: dict[str, AspectRating]
    fine_grained_score: float | None


class PromptJudgement(BaseModel):
    """UltraFeedback output for one prompt: judgements in completion order + the shown orders."""

    completions: list[CompletionJudgement]
    orders: dict[str, list[int]]  # aspect -> shown order (position -> completion index)
    requests: int = 0
    parse_failures: int = 0


def rating_schema(n: int) -> dict[str, Any]:
    item = {
        "type": "object",
        "properties": {
            "rating": {"type": "integer", "enum": [1, 2, 3, 4, 5]},
            "rationale": {"type": "string", "maxLength": 120},
        },
        "required": ["rating", "rationale"],
        "additionalProperties": False,
    }
    return {
        "type": "json_schema",
        "json_schema": {
            "name": "ratings",
            "strict": True,
            "schema": {
                "type": "object",
                "properties": {
                    "ratings": {"type": "array", "items": item, "minItems": n, "maxItems": n}
                },  # fmt: skip
                "required": ["ratings"],
                "additionalProperties": False,
            },
        },
    }


def parse_ratings(text: str, n: int) -> list[AspectRating]:
    """Ratings for n shown answers; a bad or missing one is None with the reason, never dropped."""
    obj = parse_json_object(text)
    items: list[Any] | None = None
    if obj is not None and isinstance(obj.get("ratings"), list):
        items = obj["ratings"]
    if items is None:
        found = scan_ratings(text)
        if not found:
            return [AspectRating(error="unparseable judge output") for _ in range(n)]
        items = [{"rating": r, "rationale": ""} for r in found]
    out = []
    for i in range(n):
        if i >= len(items):
            out.append(AspectRating(error=f"judge gave {len(items)} ratings for {n} answers"))
            continue
        item = items[i] if isinstance(items[i], dict) else {"rating": items[i]}
        raw = item.get("rating")
        try:
            value = int(raw)
        except (TypeError, ValueError):
            out.append(AspectRating(error=f"rating {raw!r} is not an integer"))
            continue
        if not 1 <= value <= 5:
            out.append(AspectRating(error=f"rating {value} out of range 1..5"))
            continue
        out.append(AspectRating(rating=value, rationale=str(item.get("rationale", ""))[:500]))
    return out


def mean_score(annotations: dict[str, AspectRating]) -> float | None:
    vals = [a.rating for a in annotations.values() if a.rating is not None]
    return sum(vals) / len(vals) if vals else None


class UltraFeedbackJudge:
    """Rates completions per aspect with a JSON schema forced by the endpoint (guided decoding)."""

    def __init__(
        self,
        client: LLMClient,
        aspects: list[str] | None = None,
        max_tokens: int = 256,
        temperature: float = 0.0,
        structured: bool = True,
        seed: int = 0,
    ) -> None:
        unknown = set(aspects or []) - set(ASPECTS)
        if unknown:
            raise ValueError(f"unknown aspects {sorted(unknown)}; choose from {list(ASPECTS)}")
        self.client = client
        self.aspects = aspects or list(ASPECTS)
        self.max_tokens = max_tokens
        self.temperature = temperature
        self.structured = structured
        self.seed = seed

    def messages(self, prompt: str, responses: list[str], aspect: str) -> list[dict[str, str]]:
        text = render("ultrafeedback/frame.jinja2", aspect=aspect, aspect_title=ASPECTS[aspect],
                      prompt=clip(prompt), responses=[clip(r) for r in responses])  # fmt: skip
        return [{"role": "user", "content": text}]

    async def rate_aspect(
        self, prompt_id: str, prompt: str, responses: list[str], aspect: str
    ) -> tuple[list[AspectRating], list[int]]:
        order = seeded_order(len(responses), self.seed, prompt_id, aspect)
        shown = [responses[i] for i in order]
        try:
            res = await self.client.chat(
                self.messages(prompt, shown, aspect), temperature=self.temperature,
                max_tokens=self.max_tokens, seed=self.seed,
                response_format=rating_schema(len(shown)) if self.structured else None,
            )  # fmt: skip
            parsed = parse_ratings(res.choices[0].text, len(shown))
        except RequestRejected as exc:
            parsed = [AspectRating(error=f"judge rejected the request: {str(exc)[:120]}")] * len(shown)
        back: list[AspectRating] = [AspectRating()] * len(responses)
        for pos, idx in enumerate(order):
            back[idx] = parsed[pos]
        return back, order

    async def judge(self, prompt_id: str, prompt: str, responses: list[str]) -> PromptJudgement:
        """All aspects of one prompt in flight together."""
        if not responses:
            return PromptJudgement(completions=[], orders={})
        results = await asyncio.gather(
            *(self.rate_aspect(prompt_id, prompt, responses, a) for a in self.aspects)
        )
        completions = []
        for i in range(len(responses)):
            ann = {a: results[k][0][i] for k, a in enumerate(self.aspects)}
            completions.append(CompletionJudgement(annotations=ann, fine_grained_score=mean_score(ann)))
        failures = sum(1 for c in completions for a in c.annotations.values() if a.rating is None)
        return PromptJudgement(
            completions=completions,
            orders={a: results[k][1] for k, a in enumerate(self.aspects)},
            requests=len(self.aspects),
            parse_failures=failures,
        )
