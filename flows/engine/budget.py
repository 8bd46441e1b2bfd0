"""Token and money accounting: prices per endpoint, cost per stage, and a budget that stops a run.

A budget counts what *this* run sends (journalled answers cost nothing again), as the endpoints report
it; a request waits until its worst case fits, and the run stops with one line when nothing more fits.
"""

from __future__ import annotations

import asyncio
import threading
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel

from flows.recipe import BudgetSpec

if TYPE_CHECKING:
    from flows.engine.recorded import StageStats
from serving.errors import RlaifError
from serving.price import Price


class BudgetReached(RlaifError):
    """The run stopped at its budget; everything answered so far is journalled."""

    exit_code: ClassVar[int] = 4
    label: ClassVar[str] = "stopped"


class Spend:
    """What this process's requests of one run have used so far (shared by its shards, whose requests
    all run on the one I/O loop), plus what the requests in flight may still use.

    A request is sent only when its worst case (prompt bound + `max_tokens`) fits next to the holds of
    the requests in flight; one that does not fit waits for them to settle. The run stops only when a
    request does not fit with nothing in flight: so every request that was sent is answered and
    journalled, and what the endpoints reported never exceeds the budget."""

    def __init__(self) -> None:
        self.tokens = 0
        self.usd = 0.0
        self.held_tokens = 0
        self.held_usd = 0.0
        self.holds = 0
        self.stopped: str | None = None  # the stop message, once nothing more fits
        self.lock = threading.Lock()
        self._changed: asyncio.Event | None = None

    def _fits(self, budget: BudgetSpec, share: float, tokens: int, usd: float, held: bool) -> bool:
        ht, hu = (self.held_tokens, self.held_usd) if held else (0, 0.0)
        return not (budget.tokens is not None and self.tokens + ht + tokens > budget.tokens * share) and not (
            budget.usd is not None and self.usd + hu + usd > budget.usd * share
        )

    async def reserve(self, budget: BudgetSpec | None, share: float, price: Price | None, prompt: int,
                      completion: int) -> tuple[int, float]:  # fmt: skip
        """Hold a request's worst case, waiting while the requests in flight may still use what it needs;
        raise `BudgetReached` once nothing is in flight and it still does not fit this process's share.
        Returns the hold, for `settle`."""
        if budget is None:
            return 0, 0.0
        tokens = prompt + completion
        usd = price.cost(prompt, 0, completion) if price is not None else 0.0
        while True:
            with self.lock:
                if self.stopped is None:
                    if self._fits(budget, share, tokens, usd, held=True):
                        self.held_tokens += tokens
                        self.held_usd += usd
                        self.holds += 1
                        return tokens, usd
                    if self.holds == 0:  # nothing in flight will free anything: nothing more fits
                        limit = (
                            f"{budget.tokens:,} tokens"
                            if budget.tokens is not None
                            else f"${budget.usd:,.2f}"
                        )
                        self.stopped = (
                            f"budget reached ({limit}; this run sent {self.tokens:,} tokens, ${self.usd:,.4f} "
                            "as the endpoints reported them): everything answered so far is journalled; "
                            "re-run with a larger or no `budget:` to continue"
                        )  # fmt: skip
                if self.stopped is not None:
                    break
                if self._changed is None:
                    self._changed = asyncio.Event()
                changed = self._changed
            await changed.wait()
        self._wake()
        raise BudgetReached(self.stopped)

    def _wake(self) -> None:
        with self.lock:
            changed, self._changed = self._changed, None
        if changed is not None:
            changed.set()

    def settle(self, hold: tuple[int, float], price: Price | None, prompt: int, cached: int,
               completion: int) -> None:  # fmt: skip
        """Release a request's hold and charge what the endpoint reported it used (zeros: it failed)."""
        with self.lock:
            if hold != (0, 0.0):
                self.held_tokens -= hold[0]
                self.held_usd -= hold[1]
                self.holds -= 1
            self.tokens += prompt + completion
            if price is not None:
                self.usd += price.cost(prompt, cached, completion)
        self._wake()


_SPENDS: dict[str, Spend] = {}
_LOCK = threading.Lock()


def spend_for(run_key: str, reset: bool = False) -> Spend:
    """The process-wide `Spend` of one run (keyed by its output folder); `reset` at a run's start."""
    with _LOCK:
        if reset or run_key not in _SPENDS:
            _SPENDS[run_key] = Spend()
        return _SPENDS[run_key]


class Usage(BaseModel):
    """Tokens and cost of one stage or judge: of the whole dataset, and of what this run sent."""

    requests: int = 0
    replayed: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    new_prompt_tokens: int = 0
    new_cached_prompt_tokens: int = 0
    new_completion_tokens: int = 0
    cost_usd: float | None = None  # the dataset's tokens at the endpoint's price (None: no price)
    new_cost_usd: float | None = None  # this run's requests only

    def add(self, st: StageStats, cached: bool) -> None:
        """One shard's StageStats figures (a shard read back finished sent nothing now)."""
        self.prompt_tokens += st.prompt_tokens
        self.cached_prompt_tokens += st.cached_prompt_tokens
        self.completion_tokens += st.completion_tokens
        self.replayed += st.replayed if not cached else st.sent + st.replayed
        if not cached:
            self.requests += st.sent
            self.new_prompt_tokens += st.new_prompt_tokens
            self.new_completion_tokens += st.new_completion_tokens
            self.new_cached_prompt_tokens += st.new_cached_prompt_tokens

    def price(self, price: Price | None) -> None:
        if price is None:
            return
        self.cost_usd = round(
            price.cost(self.prompt_tokens, self.cached_prompt_tokens, self.completion_tokens), 6
        )
        self.new_cost_usd = round(
            price.cost(self.new_prompt_tokens, self.new_cached_prompt_tokens, self.new_completion_tokens), 6
        )

    def cache_hit_rate(self) -> float | None:
        return self.cached_prompt_tokens / self.prompt_tokens if self.prompt_tokens else None
