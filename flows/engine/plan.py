"""From a validated recipe and live endpoints to the small `ShardPlan` every shard task receives."""

from __future__ import annotations

import hashlib
from pathlib import Path

from flows.engine.shard import JudgeRun, ShardPlan
from flows.recipe import Recipe
from judges.base import TEMPLATES
from serving.client import Endpoint


def templates_sha(kind: str, reward_model: str | None = None) -> str:
    """Hash of what shapes a judge's answers besides its spec: templates, or the reward model files."""
    h = hashlib.sha256()
    if kind == "reward_model" and reward_model:
        for name in ("config.json", "metrics.json", "reward_normalization.json", "model.safetensors"):
            p = Path(reward_model) / name
            if p.exists():
                h.update(p.read_bytes() if p.stat().st_size < 50_000_000 else str(p.stat().st_mtime).encode())
    for p in sorted(TEMPLATES.rglob("*.jinja2")):
        if kind == "ultrafeedback" and "ultrafeedback" in p.parts or p.stem == kind:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def make_plan(
    recipe: Recipe, out: Path, endpoints: list[list[Endpoint]], constitution_path: str | None = None,
    constitution_sha: str | None = None, concurrency_share: float = 1.0,
) -> ShardPlan:  # fmt: skip
    """`endpoints` = [policy, judge 1..k, critique?] as `live_endpoints` returns them."""
    judge_eps = endpoints[1 : 1 + len(recipe.judges)]
    runs = [JudgeRun(spec=s, endpoints=eps, template_sha=templates_sha(s.type, s.reward_model))
            for s, eps in zip(recipe.judges, judge_eps)]  # fmt: skip
    crit = recipe.critique if constitution_path else None
    return ShardPlan(
        out_dir=str(out.resolve()), policy_model=recipe.policy.display_name(), policy_endpoints=endpoints[0],
        sampling=recipe.sampling, judges=runs, critique=crit,
        critique_endpoints=endpoints[-1] if crit else [], constitution_path=constitution_path,
        constitution_sha=(f"{constitution_sha}:{templates_sha('constitutional_choice')}" if crit else None),
        client=recipe.client, concurrency_share=concurrency_share, prompts_in_flight=recipe.prompts_in_flight,
    )  # fmt: skip


def expected_requests(plan: ShardPlan, prompts: int, principles: int) -> int:
    """Requests a run of `prompts` prompts will make (the progress bar's total)."""
    n = plan.sampling.n
    per = n
    for j in plan.judges:
        if j.spec.type == "ultrafeedback":
            from judges.ultrafeedback import ASPECTS

            per += len(j.spec.aspects or ASPECTS)
        elif j.spec.type == "pairwise":
            per += n * (n - 1)
    if plan.critique is not None:
        k = principles if plan.critique.principles == "all" else 1
        if plan.critique.mode in ("critique", "both"):
            per += 2 * n * k
        if plan.critique.mode in ("label", "both"):
            per += 2 * (n // 2) * k
    return per * prompts
