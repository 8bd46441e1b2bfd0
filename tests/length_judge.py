"""A registered judge type for tests: score = characters x `per_char` (negative prefers the shorter
answer). Scored locally, so its accuracy on labelled pairs is known by construction."""

from __future__ import annotations

from typing import Literal

from judges.contract import Completion, Judge, JudgeConfig, Judgement, Prompt
from judges.registry import register


class CharsConfig(JudgeConfig):
    type: Literal["chars"] = "chars"
    per_char: float = 1.0


@register
class CharsJudge(Judge):
    type = "chars"
    config_class = CharsConfig
    uses_endpoint = False

    def requests_per_prompt(self, n: int) -> int:
        return 0

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        return Judgement(scores=[len(c.response) * self.config.per_char for c in completions])


class ParityConfig(JudgeConfig):
    type: Literal["parity"] = "parity"


@register
class ParityJudge(Judge):
    """Score 1 for an odd number of words, else 0: a second local judge that disputes a length ranking
    on some pairs and not on others (the review page's "judges disagree" filter has something to find)."""

    type = "parity"
    config_class = ParityConfig
    uses_endpoint = False

    def requests_per_prompt(self, n: int) -> int:
        return 0

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        return Judgement(scores=[float(len(c.response.split()) % 2) for c in completions])
