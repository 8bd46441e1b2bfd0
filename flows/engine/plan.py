"""From a validated recipe and live endpoints to the small `ShardPlan` every shard task receives."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flows.engine.shard import JudgeRun, ShardPlan
from flows.recipe import Recipe
from judges.helpers import TEMPLATES
from judges.registry import make_judge
from serving.endpoint import Endpoint
from serving.models import model_identity, resolve_model


def templates_sha(*names: str) -> str:
    """Hash of template files under judges/templates (e.g. the constitution's label template)."""
    h = hashlib.sha256()
    for name in names:
        h.update((TEMPLATES / name).read_bytes())
    return h.hexdigest()[:16]


def make_plan(
    recipe: Recipe, out: Path, endpoints: list[list[Endpoint]], constitution_path: str | None = None,
    constitution_sha: str | None = None, concurrency_share: float = 1.0,
) -> ShardPlan:  # fmt: skip
    """`endpoints` = [policy, judge 1..k, critique?] as `live_endpoints` returns them."""
    judge_eps = endpoints[1 : 1 + len(recipe.judges)]
    judges = [make_judge(s) for s in recipe.judges]
    runs = [JudgeRun(spec=j.config, endpoints=eps if j.uses_endpoint else [], template_sha=j.fingerprint())
            for j, eps in zip(judges, judge_eps)]  # fmt: skip
    crit = recipe.critique if constitution_path else None
    served = recipe.served()
    model_ids = {m.served_name(): model_identity(m.model) for m in served if m.is_local}
    model_dirs = (
        {m.served_name(): resolve_model(m.model) for m in served if m.is_local} if recipe.budget else {}
    )
    stages = ["generate", *(f"judge:{j.key}" for j in recipe.judges)] + (
        ["critique"] if recipe.critique else []
    )
    prices = {stage: m.price for stage, m in zip(stages, served) if m.price is not None}
    return ShardPlan(
        out_dir=str(out.resolve()), policy_model=recipe.policy.display_name(), policy_endpoints=endpoints[0],
        sampling=recipe.sampling, judges=runs, critique=crit,
        critique_endpoints=endpoints[-1] if crit else [], constitution_path=constitution_path,
        constitution_sha=(f"{constitution_sha}:{templates_sha('constitutional_choice.jinja2')}" if crit else None),
        client=recipe.client, concurrency_share=concurrency_share, prompts_in_flight=recipe.prompts_in_flight,
        model_ids=model_ids, model_dirs=model_dirs, prices=prices, budget=recipe.budget,
        allow_truncated_chosen=recipe.lints.allow_truncated_chosen,
    )  # fmt: skip


def expected_requests(plan: ShardPlan, prompts: int, principles: int) -> int:
    """Requests a run of `prompts` prompts will make (the progress bar's total)."""
    n = plan.sampling.n
    per = n
    for j in plan.judges:
        per += make_judge(j.spec).requests_per_prompt(n)
    if plan.critique is not None:
        k = principles if plan.critique.principles == "all" else 1
        if plan.critique.mode in ("critique", "both"):
            per += 2 * n * k
        if plan.critique.mode in ("label", "both"):
            per += 2 * (n // 2) * k
    return per * prompts
