"""A round's evaluation: greedy answers of each policy on the held-out prompts (kept per policy hash,
so each policy answers once), and the win rate of one policy over another, both orders, 95% interval."""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel

from flows.dataset.atomic_files import atomic_write_text
from flows.dataset.prompts import PromptRow
from flows.evals.policy_eval import answers, judge_ab, wilson
from serving.endpoint import ClientConfig
from serving.served import ServedModel

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

    def cell(self) -> str:
        return f"{self.rate:.2f} [{self.ci_low:.2f}, {self.ci_high:.2f}]"


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


def win_rate(recipe: Recipe, prompts: list[PromptRow], a: list[str], b: list[str]) -> WinRate:
    winners, _ = judge_ab(recipe, prompts, a, b)
    wins, losses = winners.count("x"), winners.count("y")
    n = len(winners)
    ties = n - wins - losses
    rate = (wins + 0.5 * ties) / n if n else 0.0
    lo, hi = wilson(rate, n)
    return WinRate(rate=rate, ci_low=lo, ci_high=hi, n=n, wins=wins, losses=losses, ties=ties)
