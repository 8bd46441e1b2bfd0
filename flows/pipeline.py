"""The pipeline: generate -> judge -> critique -> build -> train, as one Prefect flow.

Inputs are validated (recipe, prompts, constitution, output folder) before any model call.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

from prefect import flow
from pydantic import BaseModel, Field

from flows.build import BuildResult, build
from flows.card import plot_report, write_card
from flows.endpoints import live_endpoints
from flows.generate import StageResult, generate_flow
from flows.judge import judge_flow
from flows.prompts import PromptSet, load_prompts
from flows.recipe import Recipe
from flows.runner import task_runner
from flows.shards import check_writable, write_json
from serving.client import Endpoint, total_counters


def load_recipe_prompts(recipe: Recipe, recipe_dir: Path | None = None) -> PromptSet:
    src = recipe.prompts
    return load_prompts(src.path, src.column, src.id_column, src.split, src.limit,
                        src.max_prompt_chars, base=recipe_dir)  # fmt: skip


def load_recipe_constitution(recipe: Recipe, recipe_dir: Path | None = None) -> Any:
    if recipe.critique is None:
        return None
    from flows.prompts import resolve_path
    from judges.constitution import load_constitution

    return load_constitution(resolve_path(recipe.critique.constitution, recipe_dir))


def _flow_for(recipe: Recipe, fn):  # noqa: ANN001, ANN202
    workers = max(4, min(64, recipe.policy.max_concurrency * 2 // max(1, recipe.batch_size) + 4))
    return fn.with_options(task_runner=task_runner(recipe.task_runner, recipe.dask_address, workers))


def run_generate(recipe: Recipe, out: Path, recipe_dir: Path | None = None) -> StageResult:
    """`rlaif generate`: validate, start/reuse the policy server, run the generate flow."""
    check_writable(out)
    prompts = load_recipe_prompts(recipe, recipe_dir)
    with live_endpoints(recipe.policy) as (endpoints,):
        t0 = time.monotonic()
        res = _flow_for(recipe, generate_flow)(
            prompts=prompts.rows, endpoints=endpoints, model=recipe.policy.display_name(),
            sampling=recipe.sampling, out_dir=str(out), batch_size=recipe.batch_size,
            client_config=recipe.client,
        )  # fmt: skip
        res.wall_s = time.monotonic() - t0
    for k, v in prompts.skipped.items():
        res.skipped[k] = res.skipped.get(k, 0) + v
    return res


class RunSummary(BaseModel):
    """What a run did, per stage; written to OUT/summary.json and published as Prefect artifacts."""

    name: str
    out_dir: str
    stages: dict[str, StageResult] = Field(default_factory=dict)
    build: BuildResult | None = None
    train: dict[str, Any] | None = None
    wall_s: float = 0.0
    client: dict[str, Any] = Field(default_factory=dict)

    def one_line(self) -> str:
        g = self.stages.get("generate")
        b = self.build
        pairs = sum(v for k, v in (b.pairs if b else {}).items() if k.endswith("prefs"))
        tps = g.tokens_per_s() if g else 0.0
        return (f"done: {g.prompts if g else 0} prompts, {g.rows if g else 0} completions, "
                f"{g.completion_tokens if g else 0} tokens ({tps:.1f} tokens/s), {pairs} pairs "
                f"in {self.wall_s:.0f}s -> {self.out_dir}")  # fmt: skip


def stage_table(summary: RunSummary) -> list[dict[str, Any]]:
    out = []
    for name, st in summary.stages.items():
        out.append({"stage": name, "rows": st.rows, "requests": st.requests,
                    "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
                    "wall_s": round(st.wall_s, 1),
                    "new_completion_tokens": st.new_completion_tokens, "tokens_per_s": round(st.tokens_per_s(), 1),
                    "skipped": st.skipped})  # fmt: skip
    return out


def run_pipeline(recipe: Recipe, out: Path, recipe_dir: Path | None = None) -> RunSummary:
    """`rlaif run`: validate everything, then the pipeline flow with servers started/reused."""
    check_writable(out)
    prompts = load_recipe_prompts(recipe, recipe_dir)
    constitution = load_recipe_constitution(recipe, recipe_dir)
    judge_specs = [recipe.judge_endpoint(j.judge) for j in recipe.judges]
    crit_spec = [recipe.judge_endpoint(recipe.critique.judge)] if recipe.critique else []
    with live_endpoints(recipe.policy, *judge_specs, *crit_spec) as eps:
        summary = _flow_for(recipe, pipeline_stages)(
            recipe=recipe, prompts=prompts, out=str(out), endpoints=eps, constitution=constitution
        )
    if recipe.train is not None:
        from flows.train import train_after_build

        summary.train = train_after_build(recipe, out)
        write_json(out / "summary.json", summary.model_dump())
    return summary


@flow(name="rlaif-run")
def pipeline_stages(
    recipe: Recipe, prompts: PromptSet, out: str, endpoints: list[list[Endpoint]],
    constitution: Any = None,
) -> RunSummary:  # fmt: skip
    """generate -> judge -> critique -> build, each a sub-flow of cached tasks."""
    t0 = time.monotonic()
    counters_before = total_counters()
    out_dir = Path(out)
    policy_eps, judge_eps = endpoints[0], endpoints[1 : 1 + len(recipe.judges)]
    summary = RunSummary(name=recipe.name, out_dir=out)
    gen = generate_flow(prompts=prompts.rows, endpoints=policy_eps,
                        model=recipe.policy.display_name(), sampling=recipe.sampling, out_dir=out,
                        batch_size=recipe.batch_size, client_config=recipe.client)  # fmt: skip
    for k, v in prompts.skipped.items():
        gen.skipped[k] = gen.skipped.get(k, 0) + v
    summary.stages["generate"] = gen
    judge_shards: dict[str, list[str]] = {}
    if recipe.judges:
        jr = judge_flow(gen_shards=gen.shards, judges=list(zip(recipe.judges, judge_eps)),
                        out_dir=out, client_config=recipe.client, n_prompts=gen.prompts)  # fmt: skip
        summary.stages["judge"] = jr
        for spec in recipe.judges:
            judge_shards[spec.key] = [s for s in jr.shards if Path(s).parent.name == spec.key]
    critiques, cpairs, cinfo = None, None, None
    if recipe.critique is not None and constitution is not None:
        from flows.critique import critique_flow

        cres = critique_flow(gen_shards=gen.shards, spec=recipe.critique, constitution=constitution,
                             endpoints=endpoints[-1], out_dir=out, client_config=recipe.client)  # fmt: skip
        summary.stages["critique"] = cres.stage
        critiques, cpairs, cinfo = cres.critiques(), cres.pairs(), cres.card_info(recipe.critique)
    t_build = time.monotonic()
    built = build(out_dir, gen.shards, judge_shards, recipe.binarize, recipe, critiques, cpairs,
                  constitution.provenance() if constitution is not None else None)  # fmt: skip
    summary.stages["build"] = StageResult(stage="build", rows=sum(built.pairs.values()),
                                          wall_s=time.monotonic() - t_build, out_dir=out)  # fmt: skip
    summary.build = built
    plot_report(out_dir)
    write_card(out_dir, built, recipe, {"skipped": gen.skipped, "constitution": cinfo})
    summary.wall_s = time.monotonic() - t0
    after = total_counters()
    summary.client = {
        k: getattr(after, k) - getattr(counters_before, k) for k in ("requests", "failures", "retries")
    }
    write_json(out_dir / "summary.json", summary.model_dump())
    publish_artifacts(summary)
    return summary


def publish_artifacts(summary: RunSummary) -> None:
    """A markdown summary and a per-stage table as Prefect artifacts (no secrets in them)."""
    from prefect.artifacts import create_markdown_artifact, create_table_artifact

    table = stage_table(summary)
    md = [f"# rlaif run `{summary.name}`", "", summary.one_line(), "",
          "| stage | rows | requests | tokens | tokens/s | wall s | skipped |", "|---|---|---|---|---|---|---|"]  # fmt: skip
    for r in table:
        md.append(f"| {r['stage']} | {r['rows']} | {r['requests']} | {r['completion_tokens']} | "
                  f"{r['tokens_per_s']} | {r['wall_s']} | {r['skipped'] or ''} |")  # fmt: skip
    if summary.build:
        for key, f in summary.build.judges.items():
            md.append(f"\n- judge `{key}` ({f['type']}): parse failures {f['parse_failures']}"
                      + (f", position consistency {f.get('position_consistency')}"
                         if f["type"] == "pairwise" else ""))  # fmt: skip
    key = "".join(ch if ch.isalnum() else "-" for ch in summary.name.lower())
    create_markdown_artifact("\n".join(md), key=f"rlaif-{key}-summary", description="rlaif run")
    create_table_artifact(table, key=f"rlaif-{key}-stages", description="per-stage figures")


def dated_folder(base: Path) -> Path:
    """`base/<scheduled start>` for a deployment run (UTC, minute resolution + run name)."""
    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time
    stamp = start.strftime("%Y-%m-%dT%H-%M-%S") if start else time.strftime("%Y-%m-%dT%H-%M-%S")
    return base / f"{stamp}-{flow_run.name or 'run'}"


@flow(name="rlaif-pipeline")
def pipeline_flow(
    recipe_path: str, out: str | None = None, limit: int | None = None, dated: bool = False
) -> dict:
    """Entry point for deployments: load the recipe and run everything (into a dated folder if asked)."""
    from flows.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if limit:
        recipe.prompts.limit = limit
    out_dir = Path(out) if out else recipe.output_dir()
    if dated:
        out_dir = dated_folder(out_dir)
    summary = run_pipeline(recipe, out_dir, Path(recipe_path).parent)
    return {"out_dir": str(out_dir), "line": summary.one_line()}
