"""Win rates of one policy over another: greedy answers on held-out prompts (kept per policy hash, so each
policy answers once), judged in both orders by the recipe's pairwise judge, ties half, Wilson 95% interval."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flows.dataset.atomic_files import atomic_write_text
from flows.dataset.prompts import PromptRow
from flows.engine.live_endpoints import live_endpoints
from flows.evals.interval import wilson
from judges.contract import Side, prefer_both_orders
from judges.registry import make_judge, pick
from serving.endpoint import ClientConfig
from serving.models import DEFAULT_MODEL
from serving.served import ServedModel
from serving.shared import run_sync, shared_client

if TYPE_CHECKING:
    from flows.recipe import Recipe


class WinRate(BaseModel):
    """Wins count 1, ties (the two orders disagree, or the judge said tie) half; Wilson 95% interval."""

    rate: float
    ci_low: float
    ci_high: float
    n: int
    wins: int
    losses: int
    ties: int

    @classmethod
    def of(cls, winners: list[Side]) -> WinRate:
        """From per-prompt verdicts, x = the policy measured."""
        wins, losses, n = winners.count("x"), winners.count("y"), len(winners)
        rate = (wins + 0.5 * (n - wins - losses)) / n if n else 0.0
        lo, hi = wilson(rate, n)
        return cls(rate=rate, ci_low=lo, ci_high=hi, n=n, wins=wins, losses=losses, ties=n - wins - losses)

    def cell(self) -> str:
        return f"{self.rate:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"


def answers(spec: ServedModel, prompts: list[PromptRow], max_tokens: int, cfg: ClientConfig) -> list[str]:
    """Greedy answers of the model behind `spec` (a local server is started or reused)."""
    with live_endpoints(spec) as (eps,):
        client = shared_client(eps, cfg)

        async def go() -> list[str]:
            res = await asyncio.gather(*(client.chat(p.messages, temperature=0.0, max_tokens=max_tokens)
                                         for p in prompts))  # fmt: skip
            return [r.choices[0].text for r in res]

        return run_sync(go)


def judge_ab(recipe: Recipe, prompts: list[PromptRow], a: list[str], b: list[str]) -> tuple[list[Side], str]:
    """Per prompt "x" (A won both orders), "y" (B did) or "tie", by the recipe's evaluation judge
    (`judges.registry.pick`: its pairwise judge, else its first scoring judge, else a default one on the
    recipe's policy endpoint); and the judge's model name."""
    config = pick(recipe.judges, None)
    with live_endpoints(recipe.judge_endpoint(config.judge)) as (eps,):
        judge = make_judge(config, shared_client(eps, recipe.client))

        async def go() -> list[Side]:  # x = A's answer; a win needs both orders
            res = await asyncio.gather(
                *(prefer_both_orders(judge, p, x, y) for p, x, y in zip(prompts, a, b))
            )
            return [both.winner for both, _, _ in res]

        return run_sync(go), eps[0].model if eps else DEFAULT_MODEL


def win_rate(recipe: Recipe, prompts: list[PromptRow], a: list[str], b: list[str]) -> WinRate:
    return WinRate.of(judge_ab(recipe, prompts, a, b)[0])


def policy_answers(spec: ServedModel, policy: Any, prompts: list[PromptRow], max_tokens: int, folder: Path,
                   cfg: ClientConfig, serve: Callable[[Any], None]) -> list[str]:  # fmt: skip
    """`policy`'s answers to `prompts`, from OUT/eval/answers-<sha>.json when they were already made."""
    path = folder / f"answers-{policy.sha256[:12]}-{max_tokens}.json"
    ids = [p.prompt_id for p in prompts]
    if path.is_file():
        kept = json.loads(path.read_text())
        if kept.get("ids") == ids:
            return list(kept["answers"])
    serve(policy)
    got = answers(spec, prompts, max_tokens, cfg)
    atomic_write_text(path, json.dumps({"policy": policy.model, "sha256": policy.sha256, "ids": ids,
                                        "answers": got}) + "\n")  # fmt: skip
    return got
