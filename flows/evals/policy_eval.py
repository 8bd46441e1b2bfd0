"""`rlaif eval-policy`: serve model A and baseline B with vLLM in turn, answer held-out prompts, judge
A vs B in both orders, and report A's win rate (ties half) with a 95% interval."""

from __future__ import annotations

from pydantic import computed_field

from flows.dataset.prompts import load_prompts
from flows.evals.win_rate import WinRate, answers, judge_ab
from flows.recipe import Recipe, ServedModel, load_recipe


class PolicyEval(WinRate):
    """A's win rate over B, with what was compared."""

    model: str
    baseline: str
    mean_len_model: float
    mean_len_baseline: float
    judge: str

    @computed_field  # type: ignore[prop-decorator]
    @property
    def win_rate(self) -> float:
        return self.rate

    @computed_field  # type: ignore[prop-decorator]
    @property
    def ci95(self) -> tuple[float, float]:
        return (self.ci_low, self.ci_high)


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
    n = max(len(winners), 1)
    return PolicyEval(
        **WinRate.of(winners).model_dump(), model=model, baseline=baseline, judge=judge_model,
        mean_len_model=sum(map(len, a)) / n, mean_len_baseline=sum(map(len, b)) / n,
    )  # fmt: skip
