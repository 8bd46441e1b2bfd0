"""What each stage does for one prompt: generate its completions and critique/label them (judging is
`Judge.judge`, the contract in judges/contract.py).

Plain async functions over a chat client (`RecordingClient` in the engine, so each request is
journalled); the shard runner streams prompts through them.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from flows.dataset.prompts import PromptRow
from flows.recipe import CritiqueSpec, Sampling
from judges.constitution_file import Constitution
from judges.constitution_judge import ConstitutionalCritic, ConstitutionalJudge, pick_principles
from serving.endpoint import RequestRejected


def sample_seed(base: int | None, prompt_id: str, index: int) -> int | None:
    """A seed per (prompt, sample): reproducible whatever the sharding, for any prompt id."""
    if base is None:
        return None
    h = int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16)
    return (base + h + 7919 * index) % (2**31 - 1)


def skip_reason(exc: RequestRejected) -> str:
    text = str(exc).lower()
    if "context" in text or "too long" in text or "maximum" in text or "max_tokens" in text:
        return "too_long"
    return "rejected"


async def generate(
    client: Any, prompt: PromptRow, model: str, sampling: Sampling
) -> tuple[list[dict], str | None]:
    """All samples of one prompt as separate seeded requests in flight together. Each carries its sample
    index, so n requests with equal bodies (`seed: null`) are n journal records, never one replayed n times."""

    async def one(i: int) -> dict[str, Any]:
        seed = sample_seed(sampling.seed, prompt.prompt_id, i)
        res = await client.chat(prompt.messages, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, seed=seed, sample=i)  # fmt: skip
        c = res.choices[0]
        return {"sample_index": i, "model": model, "response": c.text,
                "sampling": {"temperature": sampling.temperature, "top_p": sampling.top_p,
                             "max_tokens": sampling.max_tokens, "seed": seed},
                "finish_reason": c.finish_reason, "prompt_tokens": res.prompt_tokens,
                "completion_tokens": res.completion_tokens}  # fmt: skip

    try:
        return list(await asyncio.gather(*(one(i) for i in range(sampling.n)))), None
    except RequestRejected as exc:
        return [], skip_reason(exc)


class PromptCritic:
    """The constitution stage for one prompt: critique -> revision per completion, and/or labels."""

    def __init__(self, spec: CritiqueSpec, constitution: Constitution, client: Any,
                 allow_truncated_chosen: bool = False) -> None:  # fmt: skip
        self.spec = spec
        self.c = constitution
        self.critic = ConstitutionalCritic(client, constitution, spec.max_tokens, allow_truncated_chosen)
        self.labeler = ConstitutionalJudge(client, logprobs=True)

    async def run(self, prompt: PromptRow, comps: list[dict[str, Any]]) -> tuple[list[dict], list[dict]]:
        s, pid = self.spec, prompt.prompt_id
        crit_jobs, label_jobs = [], []
        if s.mode in ("critique", "both"):
            for r in comps:
                for p in pick_principles(self.c, s.principles, s.seed, pid, r["sample_index"]):
                    crit_jobs.append(self._crit(prompt, r, p))
        if s.mode in ("label", "both"):
            for a, b in zip(comps[0::2], comps[1::2]):
                for p in pick_principles(self.c, s.principles, s.seed, pid, a["sample_index"], "label"):
                    label_jobs.append(self._label(prompt, a, b, p))
        crits = await asyncio.gather(*crit_jobs)
        labels = await asyncio.gather(*label_jobs)
        return list(crits), list(labels)

    async def _crit(self, prompt: PromptRow, r: dict[str, Any], p: Any) -> dict[str, Any]:
        res = await self.critic.critique(prompt.prompt, r["response"], p)
        return {"sample_index": r["sample_index"], "response": r["response"], "model": r["model"],
                **res.model_dump()}  # fmt: skip

    async def _label(self, prompt: PromptRow, a: dict[str, Any], b: dict[str, Any], p: Any) -> dict[str, Any]:
        res = await self.labeler.label(prompt.prompt, a["response"], b["response"], p)
        return {"i": a["sample_index"], "j": b["sample_index"], "x": a["response"], "y": b["response"],
                "x_model": a["model"], "y_model": b["model"], "x_cut": a["finish_reason"] == "length",
                "y_cut": b["finish_reason"] == "length", **res.model_dump()}  # fmt: skip
