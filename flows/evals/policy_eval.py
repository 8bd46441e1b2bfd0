"""`rlaif eval-policy`: serve model A and baseline B with vLLM in turn, answer held-out prompts, judge
A vs B pairwise in both orders, and report A's win rate (ties half) with a 95% interval."""

from __future__ import annotations

import asyncio
import math

from pydantic import BaseModel

from flows.dataset.prompts import PromptRow, load_prompts
from flows.engine.live_endpoints import live_endpoints
from flows.recipe import Recipe, ServedModel, load_recipe
from judges.contract import both_orders
from judges.pairwise import PairwiseConfig
from judges.registry import make_judge
from serving.endpoint import ClientConfig
from serving.models import DEFAULT_MODEL
from serving.shared import run_sync, shared_client


class PolicyEval(BaseModel):
    model: str
    baseline: str
    n: int
    wins: int
    losses: int
    ties: int
    win_rate: float
    ci95: tuple[float, float]
    mean_len_model: float
    mean_len_baseline: float
    judge: str


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    if n == 0:
        return (0.0, 1.0)
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))


def answers(spec: ServedModel, prompts: list[PromptRow], max_tokens: int, cfg: ClientConfig) -> list[str]:
    """Greedy answers of the model behind `spec` (a local server is started or reused)."""
    with live_endpoints(spec) as (eps,):
        client = shared_client(eps, cfg)

        async def go() -> list[str]:
            res = await asyncio.gather(*(client.chat(p.messages, temperature=0.0, max_tokens=max_tokens)
                                         for p in prompts))  # fmt: skip
            return [r.choices[0].text for r in res]

        return run_sync(go)


def judge_ab(recipe: Recipe, prompts: list[PromptRow], a: list[str], b: list[str]) -> tuple[list[str], str]:
    """Per prompt "x" (A won both orders), "y" (B did) or "tie", by the recipe's first pairwise judge,
    else its first judge, else pairwise on the recipe's policy endpoint; and the judge's model name."""
    pairwise = [j for j in recipe.judges if isinstance(j, PairwiseConfig)]
    config = (pairwise or recipe.judges or [PairwiseConfig()])[0]
    with live_endpoints(recipe.judge_endpoint(config.judge)) as (eps,):
        judge = make_judge(config, shared_client(eps, recipe.client))

        async def go() -> list[str]:  # x = A's answer; a win needs both orders
            res = await asyncio.gather(
                *(both_orders(judge, p.prompt, x, y) for p, x, y in zip(prompts, a, b))
            )
            return [w for w, _, _ in res]

        return run_sync(go), eps[0].model if eps else DEFAULT_MODEL


def eval_policy(
    model: str, baseline: str, prompts_path: str, column: str = "prompt", limit: int | None = None,
    judge_recipe: str | None = None, max_tokens: int = 128, port: int = 8766,
) -> PolicyEval:  # fmt: skip
    prompts = load_prompts(prompts_path, column=column, limit=limit).rows
    recipe = load_recipe(judge_recipe) if judge_recipe else Recipe()
    cfg = recipe.client
    a = answers(ServedModel(model=model, port=port), prompts, max_tokens, cfg)
    b = answers(ServedModel(model=baseline, port=port), prompts, max_tokens, cfg)
    winners, judge_model = judge_ab(recipe, prompts, a, b)
    wins, losses = winners.count("x"), winners.count("y")
    ties = len(winners) - wins - losses
    n = len(winners)
    rate = (wins + 0.5 * ties) / n if n else 0.0
    return PolicyEval(
        model=model, baseline=baseline, n=n, wins=wins, losses=losses, ties=ties, win_rate=rate,
        ci95=wilson(rate, n), mean_len_model=sum(map(len, a)) / max(n, 1),
        mean_len_baseline=sum(map(len, b)) / max(n, 1), judge=judge_model,
    )  # fmt: skip
