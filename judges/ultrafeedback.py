"""`UltraFeedbackJudge`: rates all completions of a prompt on the four UltraFeedback aspects.

Input: a prompt and its completions. Output: per completion, per aspect, `AspectRating`
(rating 1..5 or None with an error reason) and `fine_grained_score` (mean of non-null ratings).
One request per (prompt, aspect) rates every completion together, shown in a seeded shuffled order.
"""

from __future__ import annotations

import asyncio
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator

from judges.contract import Completion, Judge, JudgeConfig, Judgement, Preference, Prompt
from judges.helpers import clip, parse_json_object, render, scan_ratings, seeded_order
from serving.endpoint import RequestRejected

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


class UltraFeedbackConfig(JudgeConfig):
    type: Literal["ultrafeedback"] = "ultrafeedback"
    aspects: list[str] | None = Field(default=None, description=f"subset of {list(ASPECTS)}")
    structured: bool = Field(default=True, description="force the JSON schema with response_format")

    @field_validator("aspects")
    @classmethod
    def _known(cls, aspects: list[str] | None) -> list[str] | None:
        unknown = [a for a in aspects or [] if a not in ASPECTS]
        if unknown:
            raise ValueError(f"unknown aspect {unknown[0]!r}; choose from {list(ASPECTS)}")
        if aspects is not None and not aspects:
            raise ValueError(f"name at least one aspect of {list(ASPECTS)} (or leave `aspects` out)")
        return aspects


class UltraFeedbackJudge(Judge):
    """Rates completions per aspect with a JSON schema forced by the endpoint (guided decoding)."""

    type = "ultrafeedback"
    config_class = UltraFeedbackConfig
    ranks_by_default = True
    templates = ("ultrafeedback",)

    def __init__(
        self, config: UltraFeedbackConfig, client: Any = None, allow_truncated_chosen: bool = False
    ) -> None:
        super().__init__(config, client, allow_truncated_chosen)
        self.cfg = config

    def aspects(self) -> list[str]:
        return list(self.cfg.aspects or ASPECTS)

    def requests_per_prompt(self, n: int) -> int:
        return len(self.aspects()) if n else 0

    def messages(self, prompt: str, responses: list[str], aspect: str) -> list[dict[str, str]]:
        text = render("ultrafeedback/frame.jinja2", aspect=aspect, aspect_title=ASPECTS[aspect],
                      prompt=clip(prompt), responses=[clip(r) for r in responses])  # fmt: skip
        return [{"role": "user", "content": text}]

    async def rate_aspect(
        self, prompt: str, responses: list[str], aspect: str, order: list[int]
    ) -> list[AspectRating]:
        """Ratings of `responses` (in their own order) when shown in `order` (position -> index)."""
        shown = [responses[i] for i in order]
        try:
            res = await self.client.chat(
                self.messages(prompt, shown, aspect), temperature=self.cfg.temperature,
                max_tokens=self.cfg.max_tokens, seed=self.cfg.seed,
                response_format=rating_schema(len(shown)) if self.cfg.structured else None,
            )  # fmt: skip
            parsed = parse_ratings(res.choices[0].text, len(shown))
        except RequestRejected as exc:
            parsed = [AspectRating(error=f"judge rejected the request: {str(exc)[:120]}")] * len(shown)
        back: list[AspectRating] = [AspectRating()] * len(responses)
        for pos, idx in enumerate(order):
            back[idx] = parsed[pos]
        return back

    async def rate(self, prompt: str, responses: list[str], orders: dict[str, list[int]]) -> Judgement:
        """All aspects in flight together; `orders[aspect]` is the shown order of that request."""
        aspects = self.aspects()
        results = await asyncio.gather(*(self.rate_aspect(prompt, responses, a, orders[a]) for a in aspects))
        completions = []
        for i in range(len(responses)):
            ann = {a: results[k][i] for k, a in enumerate(aspects)}
            completions.append(CompletionJudgement(annotations=ann, fine_grained_score=mean_score(ann)))
        failures = sum(1 for c in completions for a in c.annotations.values() if a.rating is None)
        return Judgement(
            scores=[c.fine_grained_score for c in completions],
            annotations=[{a: r.model_dump() for a, r in c.annotations.items()} for c in completions],
            requests=len(aspects), parse_failures=failures,
            detail={"ratings": len(aspects) * len(responses), "null_ratings": failures},
        )  # fmt: skip

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        """All aspects show the completions in one seeded order per prompt, so a prompt's requests share
        everything but their last part (the aspect) and the server's prefix cache answers most of it."""
        if not completions:
            return Judgement(scores=[])
        order = seeded_order(len(completions), self.cfg.seed, prompt.prompt_id)
        orders = dict.fromkeys(self.aspects(), order)
        return await self.rate(prompt.prompt, [c.response for c in completions], orders)

    async def prefer(self, prompt: Prompt, first: str, second: str) -> Preference:
        """Both answers rated in one request per aspect, shown exactly in this order."""
        j = await self.rate(prompt.prompt, [first, second], dict.fromkeys(self.aspects(), [0, 1]))
        a, b = j.scores
        if a is None or b is None:
            return Preference(winner=None, parse_failures=j.parse_failures)
        return Preference(winner="tie" if a == b else ("x" if a > b else "y"),
                          parse_failures=j.parse_failures)  # fmt: skip

    def figures(self, t: dict[str, Any]) -> dict[str, Any]:
        f = super().figures(t)
        f["ratings"], f["null_ratings"] = int(t.get("ratings", 0)), int(t.get("null_ratings", 0))
        f["quality"] = f"{f['ratings']} ratings, {f['null_ratings']} null"
        return f
