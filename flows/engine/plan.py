"""From a validated recipe and its endpoints (by stage) to the small `ShardPlan` every shard task receives."""

from __future__ import annotations

from pathlib import Path

from flows.engine.shard import JudgeRun, ShardPlan
from flows.recipe import Recipe
from judges.registry import make_judge
from serving.batch import check_batch_endpoints, is_batch
from serving.endpoint import Endpoint
from serving.models import model_identity, resolve_model


def make_plan(
    recipe: Recipe, out: Path, endpoints: dict[str, list[Endpoint]], base: Path | None = None,
    concurrency_share: float = 1.0,
) -> ShardPlan:  # fmt: skip
    """`endpoints`: stage ("generate", each judge's stage) -> its endpoints, as `Recipe.served_by_stage`
    names them; `base`: the recipe's folder (relative judge files are resolved against it)."""
    runs, judges = [], []
    for config in recipe.feedback():
        spec = config.resolved(base)
        judge = make_judge(spec, None, recipe.lints.allow_truncated_chosen)  # built once, files read now
        eps = endpoints[judge.stage] if judge.uses_endpoint else []
        runs.append(JudgeRun(spec=spec, endpoints=eps, template_sha=judge.fingerprint()))
        judges.append(judge)
    served = recipe.served_by_stage()
    model_ids = {m.served_name(): model_identity(m.model) for m in served.values() if m.is_local}
    model_dirs = (
        {m.served_name(): resolve_model(m.model) for m in served.values() if m.is_local}
        if recipe.budget
        else {}
    )
    for stage, eps in endpoints.items():
        check_batch_endpoints(eps, stage)
    prices = {stage: m.price.for_mode(is_batch(endpoints.get(stage, []))) for stage, m in served.items()
              if m.price is not None}  # fmt: skip
    plan = ShardPlan(
        out_dir=str(out.resolve()), policy_model=recipe.policy.display_name(), policy_endpoints=endpoints["generate"],
        sampling=recipe.sampling, judges=runs, client=recipe.client, concurrency_share=concurrency_share,
        prompts_in_flight=recipe.prompts_in_flight, model_ids=model_ids, model_dirs=model_dirs, prices=prices,
        budget=recipe.budget, allow_truncated_chosen=recipe.lints.allow_truncated_chosen, score=recipe.binarize.score,
        binarize=recipe.binarize,
    )  # fmt: skip
    plan._built = judges  # the shard tasks of this process use these; a worker process builds its own
    return plan


def expected_by_stage(plan: ShardPlan, prompts: int) -> dict[str, int]:
    """Requests per stage ("generate", each judge's stage) a run of `prompts` prompts will make (the
    progress totals; their sum is the requests bar's)."""
    n = plan.sampling.n
    out = {"generate": n * prompts}
    for judge in plan.built():
        per = judge.requests_per_prompt(n, pairs=len(plan.expected_pairs(n))) if plan.follows(judge) else (
            judge.requests_per_prompt(n))  # fmt: skip
        out[judge.stage] = out.get(judge.stage, 0) + per * prompts
    return out
