"""Generation for one prompt: its completions as typed records (every kind of feedback after it is a
`Judge`, the contract in judges/contract.py).

Plain async functions over a chat client (`RecordingClient` in the engine, so each request is
journalled); the shard runner streams prompts through them.
"""

from __future__ import annotations

import asyncio
import hashlib
from typing import Any

from flows.dataset.prompts import PromptRow
from flows.recipe import Sampling
from judges.contract import Completion, SampleParams
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
) -> tuple[list[Completion], str | None]:
    """All samples of one prompt as separate seeded requests in flight together. Each carries its sample
    index, so n requests with equal bodies (`seed: null`) are n journal records, never one replayed n times."""

    async def one(i: int) -> Completion:
        seed = sample_seed(sampling.seed, prompt.prompt_id, i)
        res = await client.chat(prompt.messages, temperature=sampling.temperature, top_p=sampling.top_p,
                                max_tokens=sampling.max_tokens, seed=seed, sample=i)  # fmt: skip
        c = res.choices[0]
        params = SampleParams(temperature=sampling.temperature, top_p=sampling.top_p,
                              max_tokens=sampling.max_tokens, seed=seed)  # fmt: skip
        return Completion(sample_index=i, model=model, response=c.text, sampling=params,
                          finish_reason=c.finish_reason, prompt_tokens=res.prompt_tokens,
                          completion_tokens=res.completion_tokens)  # fmt: skip

    try:
        return list(await asyncio.gather(*(one(i) for i in range(sampling.n)))), None
    except RequestRejected as exc:
        return [], skip_reason(exc)
