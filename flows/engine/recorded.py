"""A chat client that answers from the shard's journal when it can and journals every new answer.

Judges and critics call `chat` exactly as on `LLMClient`; the request's content hash is its key, so a
resumed shard re-sends only what was not journalled, and an edited prompt template or principle
changes only the keys of the requests it shapes.
"""

from __future__ import annotations

import hashlib
import json
import time
from collections.abc import Callable
from typing import Any

from pydantic import BaseModel

from flows.engine.budget import Spend
from flows.engine.journal import Journal
from flows.engine.token_bound import byte_bound
from flows.recipe import BudgetSpec
from serving.client import LLMClient
from serving.endpoint import ChatResult, Choice, RequestRejected
from serving.price import Price

LOGPROB_ENTRIES = 16  # logprob entries kept per answer (the verdict token comes early); bounds the journal
PERMANENT_REJECTIONS = {400, 413, 422}  # the request itself is refused (e.g. too long): journal it


def request_key(model: str, body: dict[str, Any]) -> str:
    raw = json.dumps([model, body], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return hashlib.sha256(raw.encode()).hexdigest()[:32]


class StageStats(BaseModel):
    """Per-stage counts of one shard: requests sent now vs replayed, tokens, first answer time."""

    sent: int = 0
    replayed: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    new_prompt_tokens: int = 0  # tokens of the requests sent in this run (what a budget counts)
    new_cached_prompt_tokens: int = 0
    new_completion_tokens: int = 0
    first_at: float | None = None  # wall clock of the first answer (new or replayed)


class Meter:
    """A stage's view of the run's budget: a request's worst case is held before it is sent (waiting
    while it does not fit next to the requests in flight), and what the endpoint reported is charged after."""

    def __init__(self, spend: Spend, budget: BudgetSpec | None, price: Price | None, share: float,
                 bound: Callable[[list[dict[str, str]]], int] = byte_bound) -> None:  # fmt: skip
        self.spend, self.budget, self.price, self.share, self.bound = spend, budget, price, share, bound

    async def hold(self, messages: list[dict[str, str]], params: dict[str, Any]) -> tuple[int, float]:
        """Its prompt's token bound (flows/engine/token_bound.py) plus `max_tokens` for each of its `n`
        samples; raises `BudgetReached` when nothing more fits."""
        if self.budget is None:
            return 0, 0.0
        prompt = self.bound(messages)
        completion = int(params.get("max_tokens") or 512) * int(params.get("n") or 1)
        return await self.spend.reserve(self.budget, self.share, self.price, prompt, completion)

    def charge(self, held: tuple[int, float], res: ChatResult | None) -> None:
        if res is None:
            self.spend.settle(held, None, 0, 0, 0)
        else:
            self.spend.settle(held, self.price, res.prompt_tokens, res.cached_prompt_tokens,
                              res.completion_tokens)  # fmt: skip


class RecordingClient:
    """`chat` over an `LLMClient`, journalled per request under one stage name."""

    def __init__(self, client: LLMClient, journal: Journal, stage: str, model: str, stats: StageStats,
                 on_answer: Any = None, meter: Meter | None = None, priority: int = 0) -> None:  # fmt: skip
        self.client = client
        self.priority = priority  # the slot-queue order of this stage's requests (not part of the key)
        self.meter = meter
        self.journal = journal
        self.stage = stage
        self.model = model
        self.stats = stats
        self.on_answer = on_answer

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> ChatResult:
        body = {"messages": messages, **{k: v for k, v in params.items() if v is not None and v is not False}}
        key = request_key(self.model, body)
        rec = self.journal.get(key)
        if rec is None:
            held = await self.meter.hold(messages, params) if self.meter is not None else (0, 0.0)
            try:
                res = await self.client.chat(messages, priority=self.priority, **params)
            except BaseException as exc:
                if self.meter is not None:
                    self.meter.charge(held, None)
                if not isinstance(exc, RequestRejected) or exc.status not in PERMANENT_REJECTIONS:
                    raise
                rec = {"k": key, "s": self.stage, "rejected": exc.status, "error": str(exc)[:300]}
            else:
                c = res.choices[0]
                rec = {"k": key, "s": self.stage, "t": c.text, "f": c.finish_reason,
                       "pt": res.prompt_tokens, "ct": res.completion_tokens}  # fmt: skip
                if res.cached_prompt_tokens:
                    rec["cpt"] = res.cached_prompt_tokens
                if c.logprobs:
                    rec["lp"] = c.logprobs[:LOGPROB_ENTRIES]
                if self.meter is not None:
                    self.meter.charge(held, res)
                self.stats.new_prompt_tokens += res.prompt_tokens
                self.stats.new_cached_prompt_tokens += res.cached_prompt_tokens
                self.stats.new_completion_tokens += res.completion_tokens
            self.journal.append(rec)
            self.stats.sent += 1
        else:
            self.stats.replayed += 1
        if self.stats.first_at is None:
            self.stats.first_at = time.time()
        if self.on_answer is not None:
            self.on_answer()
        if "rejected" in rec:
            raise RequestRejected(rec["error"], rec["rejected"])
        self.stats.prompt_tokens += rec["pt"]
        self.stats.cached_prompt_tokens += rec.get("cpt", 0)
        self.stats.completion_tokens += rec["ct"]
        choice = Choice.model_construct(text=rec["t"], finish_reason=rec["f"], logprobs=rec.get("lp"))
        return ChatResult.model_construct(choices=[choice], prompt_tokens=rec["pt"], completion_tokens=rec["ct"],
                                          endpoint="")  # fmt: skip
