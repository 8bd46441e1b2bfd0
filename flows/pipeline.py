"""The pipeline: prompts -> shards (generate, judge, critique streamed per prompt) -> build -> train.

Everything is validated (recipe, prompts, constitution, output folder, endpoints) before any model call;
the Prefect flow gets paths, hashes and small configs, never rows.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path
from typing import Any

from prefect import flow

from flows.dataset.atomic_files import check_writable, write_json
from flows.dataset.build import ShardFiles, build, provenance, sum_tallies
from flows.dataset.card import plot_report, write_card
from flows.dataset.decisions import decisions_file, read_decisions
from flows.dataset.gate_result import GateResult
from flows.dataset.prompts import iter_prompts, resolve_path
from flows.engine.cost_estimate import EstimateTotal, estimate_recipe
from flows.engine.dispatch import (
    RunSpec,
    all_finished,
    api_for_workers,
    dask_share,
    peak_rss_mb,
    run_shards,
    start_prefect_api,
    task_runner,
    tune_gc,
)
from flows.engine.live_endpoints import live_endpoints
from flows.engine.manifest import Manifest, read_shard, write_manifest
from flows.engine.plan import make_plan
from flows.engine.summary import (
    RunSummary,
    StageResult,
    publish_artifacts,
    stage_results,
    upstream_ledger,
    usage_table,
)
from flows.evals.gate import Gate, GateFailed
from flows.recipe import Recipe
from serving import metrics
from serving.shared import client_limits, total_counters


def prepare_prompts(recipe: Recipe, out: Path, recipe_dir: Path | None = None,
                    columns: list[str] | None = None) -> Manifest:  # fmt: skip
    """Normalise the prompt set into Parquet shards under OUT/prompts (streamed), keeping the `columns`
    that judges read."""
    src = recipe.prompts
    skipped: dict[str, int] = {}
    notes: dict[str, int] = {}
    rows = iter_prompts(src.path, src.column, src.id_column, src.split, src.limit, src.max_prompt_chars,
                        base=recipe_dir, skipped=skipped, notes=notes, columns=columns)  # fmt: skip
    man = write_manifest(
        rows, skipped, out, recipe.shard_size, str(resolve_path(src.path, recipe_dir)), notes
    )
    if man.notes.get("turns_unused"):
        print(f"rlaif: warning: {man.notes['prompts_with_unused_turns']} prompts of {man.source} have more than "
              f"one turn in `{src.column}`; only the first turn is used ({man.notes['turns_unused']} turns "
              "left out, counted in the ledger)", file=sys.stderr)  # fmt: skip
    return man


def run_pipeline(
    recipe: Recipe, out: Path, recipe_dir: Path | None = None, no_gate: bool = False
) -> RunSummary:
    """`rlaif run`: validate everything, then the pipeline flow with servers started/reused.

    A recipe `gate:` first measures its judge on labelled pairs (exit 3 below threshold, unless `no_gate`).
    When every shard is already finished with this plan there is nothing to send: the build, card and
    summary are brought up to date without starting a model server or a Prefect flow run."""
    t_cmd = time.monotonic()
    check_writable(out)
    read_decisions(decisions_file(out))  # a malformed review decision stops the run before any request
    by_stage = recipe.served_by_stage()
    plan = make_plan(recipe, out, {k: m.endpoint_list() for k, m in by_stage.items()}, recipe_dir)
    gate = Gate(recipe, recipe_dir, out) if recipe.gate is not None else None  # reads the pairs now
    columns = sorted({c for judge in plan.built() for c in judge.columns()})
    manifest = prepare_prompts(recipe, out, recipe_dir, columns)
    served = list(by_stage.values())
    spec = RunSpec(
        manifest_path=manifest.path, manifest_sha256=manifest.sha256, plan=plan, task_runner=recipe.task_runner,
        dask_address=recipe.dask_address, dask_workers=recipe.dask_workers,
        shards_in_flight=recipe.shards_in_flight,
    )  # fmt: skip
    tune_gc()
    if all_finished(manifest, spec.plan):
        cached = gate.cached() if gate else None
        summary = pipeline_stages.fn(recipe=recipe, spec=spec, out=str(out),
                                     gate=cached, publish=False)  # fmt: skip
        summary.engine["flow_run"] = "none: every shard was already finished, nothing to send"
        write_json(out / "summary.json", summary.model_dump())
    else:
        api_url = start_prefect_api()  # starts in the background while the estimate is made
        spec.estimate = announce_estimate(recipe, out, recipe_dir, manifest, spec, gate)
        with live_endpoints(*served):
            gated = run_gate(gate, recipe, out, no_gate) if gate else None
            urls = [e.base_url for m in served for e in m.endpoint_list()]
            before = metrics.snapshot(urls)
            with api_for_workers(spec, api_url()):
                spec.plan.concurrency_share = dask_share(spec)
                flow_fn = pipeline_stages.with_options(task_runner=task_runner(spec))
                summary = flow_fn(recipe=recipe, spec=spec, out=str(out), gate=gated)
            summary.prefix_cache = metrics.hit_rates(before, metrics.snapshot(urls))
            write_json(out / "summary.json", summary.model_dump())
    if recipe.train is not None:
        from flows.training.train_flow import train_after_build

        summary.train = train_after_build(recipe, out)
    summary.total_s = round(time.monotonic() - t_cmd, 2)
    write_json(out / "summary.json", summary.model_dump())
    return summary


def announce_estimate(recipe: Recipe, out: Path, recipe_dir: Path | None, manifest: Manifest, spec: RunSpec,
                      gate: Gate | None) -> EstimateTotal | None:  # fmt: skip
    """Print `rlaif estimate`'s one line (with the budget beside it) before anything is sent. It never
    stops a run: when it cannot be made, one line says why and the run goes on."""
    try:
        est = estimate_recipe(recipe, out, recipe_dir, plan=spec.plan,
                              prompts=(p for ref in manifest.shards for p in read_shard(ref)),
                              once=gate.estimate_requests() if gate else None)  # fmt: skip
    except Exception as exc:  # an estimate is advice; the run's own checks already passed
        print(f"rlaif: estimate: not available ({type(exc).__name__}: {str(exc)[:200]})", flush=True)
        return None
    print(est.line(recipe.budget), flush=True)
    return est.engine_total()


def run_gate(gate: Gate, recipe: Recipe, out: Path, no_gate: bool) -> GateResult:
    """Measure the gated judge; a failure is written to summary.json (no datasets) and stops the run."""
    res = gate.run()
    try:
        res = gate.enforce(res, no_gate)
    except GateFailed:
        write_json(out / "summary.json", RunSummary(name=recipe.name, out_dir=str(out), gate=res,
                                                     stopped="gate failed").model_dump())  # fmt: skip
        raise
    return res


@flow(name="rlaif-run")
def pipeline_stages(
    recipe: Recipe,
    spec: RunSpec,
    out: str,
    gate: GateResult | None = None,
    publish: bool = True,
) -> RunSummary:
    """shards (generate -> judges + critique, streamed) -> build -> card, summary, artifacts."""
    t0 = time.monotonic()
    counters_before = total_counters()
    out_dir = Path(out)
    eng = run_shards(spec)
    summary = RunSummary(name=recipe.name, out_dir=out, stages=stage_results(eng, spec.plan),
                         usage=usage_table(eng, spec.plan.prices), gate=gate)  # fmt: skip
    tallies = sum_tallies({k: v for k, v in s.judges.items()} for s in eng.shards)
    figures: dict[str, dict[str, Any]] = {}
    for j, judge in zip(spec.plan.judges, spec.plan.built()):
        t = tallies.setdefault(j.spec.key, {})
        t["type"], t["model"] = judge.type, judge.model_name([e.model for e in j.endpoints])
        figures[j.spec.key] = {"type": t["type"], "model": t["model"], **judge.figures(t)}
    t_build = time.monotonic()
    prov = provenance(
        recipe, tallies, {k: v for judge in spec.plan.built() for k, v in judge.provenance().items()}
    )
    files = [
        ShardFiles(rows_path=s.rows_path, cpairs_path=s.cpairs_path, fingerprint=s.fingerprint)
        for s in eng.shards
    ]
    built, plot = build(out_dir, files, recipe.binarize, spec.plan.score_key(),
                        spec.plan.uf_features().arrow_schema, prov, figures, lints=recipe.lints,
                        decontaminate=recipe.decontaminate, ledger=upstream_ledger(spec, eng))  # fmt: skip
    summary.stages["build"] = StageResult(
        stage="build", rows=sum(built.pairs.values()), wall_s=time.monotonic() - t_build
    )
    summary.build = built
    if plot is not None or not (out_dir / "report" / "scores.png").exists():
        plot_report(out_dir, plot)
    write_card(
        out_dir,
        built,
        recipe,
        skipped=eng.skipped,
        gate=gate,
        usage={k: u.model_dump() for k, u in summary.usage.items()},
    )
    summary.wall_s = time.monotonic() - t0
    after = total_counters()
    summary.client = {
        k: getattr(after, k) - getattr(counters_before, k)
        for k in ("requests", "failures", "retries", "rate_limited")
    }
    summary.client["concurrency"] = client_limits()  # per endpoint: configured, settled, lowest (AIMD)
    sent = eng.requests_sent()
    summary.engine = {"shards": len(eng.shards), "task_runs": eng.task_runs, "requests": sent,
                      "requests_per_s": round(sent / eng.wall_s, 1) if eng.wall_s else 0.0,
                      "engine_s": round(eng.wall_s, 2), "first_judged_s": eng.first_judged_s(),
                      "peak_rss_mb": round(peak_rss_mb(), 1), "task_runner": spec.task_runner}  # fmt: skip
    write_json(out_dir / "summary.json", summary.model_dump())
    if publish:
        publish_artifacts(summary)
    return summary


def run_generate(recipe: Recipe, out: Path, recipe_dir: Path | None = None) -> RunSummary:
    """`rlaif generate`: the pipeline with no judges, critique or training (completions only)."""
    gen_only = recipe.model_copy(update={"judges": [], "critique": None, "train": None})
    return run_pipeline(gen_only, out, recipe_dir)


def dated_folder(base: Path) -> Path:
    """`base/<scheduled start>` for a deployment run (UTC, minute resolution + run name)."""
    from prefect.runtime import flow_run

    start = flow_run.scheduled_start_time
    stamp = start.strftime("%Y-%m-%dT%H-%M-%S") if start else time.strftime("%Y-%m-%dT%H-%M-%S")
    return base / f"{stamp}-{flow_run.name or 'run'}"


@flow(name="rlaif-pipeline")
def pipeline_flow(
    recipe_path: str,
    out: str | None = None,
    limit: int | None = None,
    dated: bool = False,
    no_gate: bool = False,
) -> dict:
    """Entry point for deployments: load the recipe and run everything (into a dated folder if asked)."""
    from flows.recipe import load_run

    recipe, out_dir = load_run(recipe_path, limit or None, out)
    if dated:
        out_dir = dated_folder(out_dir)
    summary = run_pipeline(recipe, out_dir, Path(recipe_path).parent, no_gate=no_gate)
    return {"out_dir": str(out_dir), "line": summary.one_line()}
