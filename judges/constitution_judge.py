"""Constitution-driven judges.

`ConstitutionalCritic`: principle -> critique -> revision; the revision becomes `chosen` over the
original. `ConstitutionalJudge`: a principle's comparison question as a multiple choice (A)/(B),
soft P(A) from logprobs averaged over both orders, or a hard label from both orders.
`ConstitutionLabelJudge`: the same question behind the judge contract, so judge-eval can measure it.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, Field

from judges.constitution_file import Constitution, Principle, load_constitution
from judges.contract import Judge, JudgeConfig, Judgement, Preference
from judges.helpers import choice_probability, clip, render
from serving.client import LLMClient
from serving.endpoint import RequestRejected

REFUSAL = re.compile(
    r"^(i'?m sorry|i am sorry|i cannot|i can'?t (revise|rewrite|help)|no (revision|changes?) (is |are )?needed"
    r"|the (original )?(answer|response) (is|was) (already )?fine|as an ai)",
    re.IGNORECASE,
)


class Critique(BaseModel):
    """One critique-and-revision of one completion under one principle."""

    principle_id: str
    principle_sha256: str
    critique: str | None = None
    revision: str | None = None
    status: Literal["kept", "identical", "empty", "refusal", "truncated", "error"] = "kept"
    error: str | None = None
    requests: int = 0


class Label(BaseModel):
    """A constitutional preference between x and y; `p_x` is the soft label (None without logprobs)."""

    principle_id: str
    principle_sha256: str
    winner: Literal["x", "y", "tie"]
    p_x: float | None = Field(default=None, ge=0, le=1)
    consistent: bool
    requests: int = 2


def pick_principles(c: Constitution, mode: str, seed: int, *key: object) -> list[Principle]:
    """All principles, or one sampled reproducibly from (seed, key)."""
    if mode == "all":
        return list(c.principles)
    return [random.Random("|".join(map(str, (seed, *key)))).choice(c.principles)]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def revision_status(original: str, revision: str) -> str:
    if not revision.strip():
        return "empty"
    if _norm(revision) == _norm(original):
        return "identical"
    if REFUSAL.match(revision.strip()):
        return "refusal"
    return "kept"


class ConstitutionalCritic:
    """Critique then revise a response under a principle, with the constitution's few-shot examples."""

    def __init__(self, client: LLMClient, constitution: Constitution, max_tokens: int = 128,
                 allow_truncated: bool = False) -> None:  # fmt: skip
        self.client = client
        self.constitution = constitution
        self.max_tokens = max_tokens
        self.allow_truncated = allow_truncated  # a revision cut at max_tokens may still be kept

    def _shots(self, principle: Principle) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        for ex in self.constitution.examples:
            msgs += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.response},
                     {"role": "user", "content": principle.critique},
                     {"role": "assistant", "content": ex.critique},
                     {"role": "user", "content": principle.revision},
                     {"role": "assistant", "content": ex.revision}]  # fmt: skip
        return msgs

    async def critique(self, prompt: str, response: str, principle: Principle) -> Critique:
        out = Critique(principle_id=principle.id, principle_sha256=principle.sha256())
        convo = self._shots(principle) + [
            {"role": "user", "content": clip(prompt)},
            {"role": "assistant", "content": clip(response)},
            {"role": "user", "content": principle.critique},
        ]
        try:
            res = await self.client.chat(convo, temperature=0.0, max_tokens=self.max_tokens)
            out.critique = res.choices[0].text.strip()
            convo += [{"role": "assistant", "content": out.critique},
                      {"role": "user", "content": principle.revision}]  # fmt: skip
            res = await self.client.chat(convo, temperature=0.0, max_tokens=self.max_tokens)
            out.revision = res.choices[0].text.strip()
        except RequestRejected as exc:
            out.status, out.error = "error", str(exc)[:200]
            return out
        finally:
            out.requests = 1 + int(out.critique is not None)
        out.status = revision_status(response, out.revision)  # type: ignore[assignment]
        if out.status == "kept" and res.choices[0].finish_reason == "length" and not self.allow_truncated:
            out.status = "truncated"  # a revision cut at max_tokens is never chosen over its original
        return out


class ConstitutionalJudge:
    """Labels (x, y) with a principle's comparison question, judged in both orders."""

    template = "constitutional_choice.jinja2"

    def __init__(self, client: LLMClient, logprobs: bool = True) -> None:
        self.client = client
        self.logprobs = logprobs

    async def _ask(
        self, prompt: str, a: str, b: str, principle: Principle
    ) -> tuple[str | None, float | None]:
        text = render(self.template, prompt=clip(prompt), response_a=clip(a), response_b=clip(b),
                      question=principle.comparison)  # fmt: skip
        try:
            res = await self.client.chat(
                [{"role": "user", "content": text}], temperature=0.0, max_tokens=1,
                logprobs=self.logprobs, top_logprobs=10 if self.logprobs else None,
                extra_body={"structured_outputs": {"choice": ["A", "B"]}},
            )  # fmt: skip
        except RequestRejected:
            return None, None
        choice = res.choices[0]
        letter = choice.text.strip().strip("()").strip()[:1].upper() or None
        p_a = choice_probability(choice.logprobs, ("A", "B")) if self.logprobs else None
        return (letter if letter in ("A", "B") else None), p_a

    async def label(self, prompt: str, x: str, y: str, principle: Principle) -> Label:
        (fa, fp), (ba, bp) = await asyncio.gather(
            self._ask(prompt, x, y, principle), self._ask(prompt, y, x, principle)
        )
        f = {"A": "x", "B": "y"}.get(fa or "")
        b = {"A": "y", "B": "x"}.get(ba or "")
        probs = [p for p in (fp, None if bp is None else 1 - bp) if p is not None]
        p_x = sum(probs) / len(probs) if probs else None
        consistent = f is not None and f == b
        if p_x is not None:
            winner = "x" if p_x > 0.5 else "y" if p_x < 0.5 else "tie"
        else:
            winner = f if consistent else "tie"
        return Label(
            principle_id=principle.id,
            principle_sha256=principle.sha256(),
            winner=winner,
            p_x=p_x,
            consistent=consistent,
        )  # type: ignore[arg-type]


class ConstitutionLabelConfig(JudgeConfig):
    """The constitution's label judge as judge-eval measures it (recipes label through `critique:`)."""

    type: Literal["constitution"] = "constitution"
    constitution: str = Field(description="path to a constitution YAML file")
    principles: Literal["sample", "all"] = Field(default="all", description="ask every principle, or one")
    logprobs: bool = True


class ConstitutionLabelJudge(Judge):
    """`ConstitutionalJudge` for one shown order: each picked principle's comparison question is asked
    once; P(first) is the mean soft label and decides the winner (without logprobs: the letters'
    majority). Not in the registry (recipes label through `critique:`): only `prefer`, what judge-eval
    calls, is supported."""

    type = "constitution"
    config_class = ConstitutionLabelConfig
    templates = (ConstitutionalJudge.template,)

    def __init__(self, config: ConstitutionLabelConfig, client: Any = None) -> None:
        super().__init__(config, client)
        self.cfg = config
        self.constitution = load_constitution(config.constitution)
        self.labeller = ConstitutionalJudge(client, logprobs=config.logprobs)

    def extra_files(self) -> list[Path]:
        return [Path(self.cfg.constitution)]

    def requests_per_prompt(self, n: int) -> int:
        per_pair = len(self.constitution.principles) if self.cfg.principles == "all" else 1
        return n * (n - 1) * per_pair

    async def judge(self, prompt_id: str, prompt: str, responses: list[str],
                    messages: list[dict[str, str]] | None = None) -> Judgement:  # fmt: skip
        raise NotImplementedError(
            "the constitution label judge runs in a recipe as `critique: {mode: label}`"
        )

    async def prefer(self, prompt: str, first: str, second: str) -> Preference:
        # the same principle(s) for both orders of a pair: the sample is keyed by the unordered pair
        principles = pick_principles(self.constitution, self.cfg.principles, self.cfg.seed, prompt,
                                     *sorted((first, second)))  # fmt: skip
        asks = await asyncio.gather(*(self.labeller._ask(prompt, first, second, p) for p in principles))
        letters = [a for a, _ in asks if a is not None]
        probs = [p for _, p in asks if p is not None]
        failures = len(asks) - len(letters)
        if not letters and not probs:
            return Preference(winner=None, parse_failures=failures)
        p_first = sum(probs) / len(probs) if probs else None
        lead = p_first - 0.5 if p_first is not None else letters.count("A") - letters.count("B")
        winner = "first" if lead > 0 else "second" if lead < 0 else "tie"
        return Preference(winner=winner, p_first=p_first, parse_failures=failures)  # type: ignore[arg-type]
