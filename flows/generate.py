"""Generate stage: the policy writes `n` completions per prompt, one shard per batch of prompts.

`generate_batch` is the plain, resumable stage function (an existing shard means no requests);
`generate_flow` maps it over batches as cached Prefect tasks, all batches in flight together.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel, Field

from flows import progress
from flows.prompts import PromptRow
from flows.recipe import Sampling
from flows.shards import read_json, write_json
from serving.client import (
    ClientConfig,
    Counters,
    Endpoint,
    LLMClient,
    RequestRejected,
    io_loop,
    shared_client,
)


class CompletionRow(BaseModel):
    prompt_id: str
    prompt: str
    messages: list[dict[str, str]]
    source: str = ""
    sample_index: int
    model: str
    response: str
    sampling: dict[str, Any]
    finish_reason: str | None
    prompt_tokens: int
    completion_tokens: int


class StageResult(BaseModel):
    """What a stage returns: its shard paths and counts (small, so Prefect can persist it)."""

    stage: str
    shards: list[str] = Field(default_factory=list)
    rows: int = 0
    prompts: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    completion_tokens: int = 0
    requests: int = 0  # sent in this run (0 when everything came from cache)
    new_completion_tokens: int = 0  # generated in this run; tokens/s uses these
    wall_s: float = 0.0
    out_dir: str = ""

    def tokens_per_s(self) -> float:
        return self.new_completion_tokens / self.wall_s if self.wall_s else 0.0


def batch_key(batch: list[PromptRow], model: str, sampling: Sampling) -> str:
    h = hashlib.sha256()
    h.update(json.dumps([model, sampling.model_dump()], sort_keys=True).encode())
    for p in batch:
        h.update(p.prompt_id.encode())
        h.update(json.dumps(p.messages, sort_keys=True).encode())
    return h.hexdigest()[:20]


def sample_seed(base: int | None, prompt_id: str, index: int) -> int | None:
    """A seed per (prompt, sample): reproducible whatever the batching."""
    if base is None:
        return None
    return (base + int(prompt_id[:8], 16) + 7919 * index) % (2**31 - 1)


def _skip_reason(exc: RequestRejected) -> str:
    text = str(exc).lower()
    if "context" in text or "too long" in text or "maximum" in text or "max_tokens" in text:
        return "too_long"
    return "rejected"


async def complete_prompt(
    client: LLMClient, prompt: PromptRow, model: str, sampling: Sampling
) -> tuple[list[CompletionRow], str | None]:
    """All samples of one prompt, as separate seeded requests in flight together."""

    async def one(i: int) -> CompletionRow:
        seed = sample_seed(sampling.seed, prompt.prompt_id, i)
        res = await client.chat(
            prompt.messages, temperature=sampling.temperature, top_p=sampling.top_p,
            max_tokens=sampling.max_tokens, seed=seed,
        )  # fmt: skip
        progress.advance("completions")
        choice = res.choices[0]
        return CompletionRow(
            prompt_id=prompt.prompt_id, prompt=prompt.prompt, messages=prompt.messages,
            source=prompt.source, sample_index=i, model=model, response=choice.text,
            sampling={"temperature": sampling.temperature, "top_p": sampling.top_p,
                      "max_tokens": sampling.max_tokens, "seed": seed},
            finish_reason=choice.finish_reason, prompt_tokens=res.prompt_tokens,
            completion_tokens=res.completion_tokens,
        )  # fmt: skip

    try:
        rows = await asyncio.gather(*(one(i) for i in range(sampling.n)))
    except RequestRejected as exc:
        return [], _skip_reason(exc)
    return list(rows), None


def generate_batch(
    batch: list[PromptRow],
    endpoints: list[Endpoint],
    client_config: ClientConfig,
    model: str,
    sampling: Sampling,
    shard_dir: str,
) -> str:
    """Write (or find) the shard for one batch; returns its path. Finished shards cost nothing."""
    path = Path(shard_dir) / f"shard-{batch_key(batch, model, sampling)}.json"
    if path.exists():
        return str(path)
    client = shared_client(endpoints, client_config)

    async def run() -> list[tuple[list[CompletionRow], str | None]]:
        return await asyncio.gather(*(complete_prompt(client, p, model, sampling) for p in batch))

    t0 = time.monotonic()
    results = io_loop().run(run())
    rows = [r.model_dump() for rs, _ in results for r in rs]
    skipped: dict[str, int] = {}
    for _, reason in results:
        if reason:
            skipped[reason] = skipped.get(reason, 0) + 1
    write_json(path, {"stage": "generate", "rows": rows, "skipped": skipped,
                      "wall_s": time.monotonic() - t0})  # fmt: skip
    return str(path)


def batches_of(rows: list[PromptRow], size: int) -> list[list[PromptRow]]:
    return [rows[i : i + size] for i in range(0, len(rows), size)]


def summarize(
    stage: str, shards: list[str], out_dir: str, wall_s: float, client: LLMClient, before: Counters
) -> StageResult:
    res = StageResult(stage=stage, shards=shards, out_dir=out_dir, wall_s=wall_s,
                      requests=client.counters.requests - before.requests,
                      new_completion_tokens=client.counters.completion_tokens - before.completion_tokens)  # fmt: skip
    prompts: set[str] = set()
    for s in shards:
        data = read_json(Path(s))
        for r in data["rows"]:
            res.rows += 1
            prompts.add(r["prompt_id"])
            res.prompt_tokens += int(r.get("prompt_tokens") or 0)
            res.completion_tokens += int(r.get("completion_tokens") or 0)
        for k, v in data.get("skipped", {}).items():
            res.skipped[k] = res.skipped.get(k, 0) + v
    res.prompts = len(prompts)
    return res


# --- Prefect wrappers -------------------------------------------------------------------------


@task(
    name="generate-batch",
    cache_policy=(INPUTS - "endpoints" - "client_config") + TASK_SOURCE,
    retries=1,
    retry_delay_seconds=5,
)
def generate_batch_task(
    batch: list[PromptRow],
    endpoints: list[Endpoint],
    client_config: ClientConfig,
    model: str,
    sampling: Sampling,
    shard_dir: str,
) -> str:
    return generate_batch(batch, endpoints, client_config, model, sampling, shard_dir)


@flow(name="rlaif-generate")
def generate_flow(
    prompts: list[PromptRow],
    endpoints: list[Endpoint],
    model: str,
    sampling: Sampling,
    out_dir: str,
    batch_size: int = 8,
    client_config: ClientConfig | None = None,
) -> StageResult:
    """Generate as a Prefect flow: one cached task per batch, all batches submitted at once."""
    from flows.runner import map_cached

    cfg = client_config or ClientConfig()
    client = shared_client(endpoints, cfg)
    before = client.counters.model_copy()
    t0 = time.monotonic()
    batches = batches_of(prompts, batch_size)
    calls = [dict(batch=b, endpoints=endpoints, client_config=cfg, model=model, sampling=sampling,
                  shard_dir=str(Path(out_dir) / "generate")) for b in batches]  # fmt: skip
    totals = {"batches": len(batches), "completions": len(prompts) * sampling.n}
    with progress.bars(totals, "generate"):
        shards = map_cached(generate_batch_task, calls, out_dir,
                            lambda path: progress.advance("completions", len(read_json(Path(path))["rows"])))  # fmt: skip
    return summarize("generate", shards, out_dir, time.monotonic() - t0, client, before)
