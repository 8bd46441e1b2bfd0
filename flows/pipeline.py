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
from pydantic import BaseModel, Field

from flows.card import plot_report, write_card
from flows.dataset.build import BuildResult, ShardFiles, build, provenance, sum_tallies
from flows.dataset.ledger import Ledger
from flows.endpoints import live_endpoints
from flows.engine.budget import Usage
from flows.engine.manifest import Manifest, write_manifest
from flows.engine.plan import make_plan
from flows.engine.run import (
    EngineResult,
    RunSpec,
    all_finished,
    api_for_workers,
    dask_share,
    load_manifest,
    peak_rss_mb,
    run_shards,
    start_prefect_api,
    task_runner,
    tune_gc,
)
from flows.gate import Gate, GateFailed
from flows.prompts import iter_prompts, resolve_path
from flows.recipe import Recipe
from flows.shards import check_writable, write_json
from judges.registry import make_judge
from serving import metrics
from serving.price import Price
from serving.shared import total_counters


class StageResult(BaseModel):
    """One stage's figures in the summary (stages overlap: `wall_s` is the engine's span)."""

    stage: str
    rows: int = 0
    prompts: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # answered from the server's prefix cache (vLLM, OpenAI report it)
    completion_tokens: int = 0
    requests: int = 0  # sent in this run (0 when everything came from the journal/cache)
    replayed: int = 0  # answered from the journal
    new_completion_tokens: int = 0
    wall_s: float = 0.0

    def tokens_per_s(self) -> float:
        return self.new_completion_tokens / self.wall_s if self.wall_s else 0.0


class RunSummary(BaseModel):
    """What a run did; written to OUT/summary.json and published as Prefect artifacts."""

    name: str
    out_dir: str
    stages: dict[str, StageResult] = Field(default_factory=dict)
    build: BuildResult | None = None
    train: dict[str, Any] | None = None
    engine: dict[str, Any] = Field(default_factory=dict)
    usage: dict[str, Usage] = Field(default_factory=dict)  # per stage and judge: tokens, cache hits, cost
    gate: dict[str, Any] | None = None  # flows.gate.GateResult
    prefix_cache: dict[str, dict[str, Any]] = Field(default_factory=dict)  # vLLM /metrics, per endpoint
    stopped: str | None = None  # why the run stopped before its datasets (e.g. "gate failed")
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


def prepare_prompts(recipe: Recipe, out: Path, recipe_dir: Path | None = None) -> Manifest:
    """Normalise the prompt set into Parquet shards under OUT/prompts (streamed)."""
    src = recipe.prompts
    skipped: dict[str, int] = {}
    notes: dict[str, int] = {}
    rows = iter_prompts(src.path, src.column, src.id_column, src.split, src.limit, src.max_prompt_chars,
                        base=recipe_dir, skipped=skipped, notes=notes)  # fmt: skip
    man = write_manifest(
        rows, skipped, out, recipe.shard_size, str(resolve_path(src.path, recipe_dir)), notes
    )
    if man.notes.get("turns_unused"):
        print(f"rlaif: warning: {man.notes['prompts_with_unused_turns']} prompts of {man.source} have more than "
              f"one turn in `{src.column}`; only the first turn is used ({man.notes['turns_unused']} turns "
              "left out, counted in the ledger)", file=sys.stderr)  # fmt: skip
    return man


def constitution_ref(recipe: Recipe, recipe_dir: Path | None) -> tuple[Any, str | None]:
    if recipe.critique is None:
        return None, None
    from judges.constitution import load_constitution

    path = resolve_path(recipe.critique.constitution, recipe_dir)
    return load_constitution(path), str(path.resolve())


def run_pipeline(
    recipe: Recipe, out: Path, recipe_dir: Path | None = None, no_gate: bool = False
) -> RunSummary:
    """`rlaif run`: validate everything, then the pipeline flow with servers started/reused.

    A recipe `gate:` first measures its judge on labelled pairs (exit 3 below threshold, unless `no_gate`).
    When every shard is already finished with this plan there is nothing to send: the build, card and
    summary are brought up to date without starting a model server or a Prefect flow run."""
    check_writable(out)
    constitution, cpath = constitution_ref(recipe, recipe_dir)
    gate = Gate(recipe, recipe_dir, out) if recipe.gate is not None else None  # reads the pairs now
    manifest = prepare_prompts(recipe, out, recipe_dir)
    served = recipe.served()
    spec = RunSpec(
        manifest_path=manifest.path, manifest_sha256=manifest.sha256,
        plan=make_plan(recipe, out, [s.endpoint_list() for s in served], cpath,
                       constitution.sha256 if constitution else None),
        principles=len(constitution.principles) if constitution else 1, task_runner=recipe.task_runner,
        dask_address=recipe.dask_address, dask_workers=recipe.dask_workers,
        shards_in_flight=recipe.shards_in_flight,
    )  # fmt: skip
    tune_gc()
    if all_finished(manifest, spec.plan):
        cached = gate.cached() if gate else None
        summary = pipeline_stages.fn(recipe=recipe, spec=spec, out=str(out), constitution=constitution,
                                     gate=cached.model_dump() if cached else None, publish=False)  # fmt: skip
        summary.engine["flow_run"] = "none: every shard was already finished, nothing to send"
        write_json(out / "summary.json", summary.model_dump())
    else:
        api_url = start_prefect_api()
        with live_endpoints(*served):
            gated = run_gate(gate, recipe, out, no_gate) if gate else None
            urls = [e.base_url for m in served for e in m.endpoint_list()]
            before = metrics.snapshot(urls)
            with api_for_workers(spec, api_url()):
                spec.plan.concurrency_share = dask_share(spec)
                flow_fn = pipeline_stages.with_options(task_runner=task_runner(spec))
                summary = flow_fn(
                    recipe=recipe, spec=spec, out=str(out), constitution=constitution, gate=gated
                )
            summary.prefix_cache = metrics.hit_rates(before, metrics.snapshot(urls))
            write_json(out / "summary.json", summary.model_dump())
    if recipe.train is not None:
        from flows.train import train_after_build

        summary.train = train_after_build(recipe, out)
        write_json(out / "summary.json", summary.model_dump())
    return summary


def run_gate(gate: Gate, recipe: Recipe, out: Path, no_gate: bool) -> dict[str, Any]:
    """Measure the gated judge; a failure is written to summary.json (no datasets) and stops the run."""
    res = gate.run()
    try:
        res = gate.enforce(res, no_gate)
    except GateFailed:
        write_json(out / "summary.json", RunSummary(name=recipe.name, out_dir=str(out), gate=res.model_dump(),
                                                     stopped="gate failed").model_dump())  # fmt: skip
        raise
    return res.model_dump()


def usage_table(eng: EngineResult, prices: dict[str, Price]) -> dict[str, Usage]:
    """Tokens, prefix-cache hits and cost per stage and per judge ("generate", "judge:<key>", ...)."""
    out: dict[str, Usage] = {}
    for s in eng.shards:
        for name, st in s.stages.items():
            out.setdefault(name, Usage()).add(st, s.cached)
    for name, u in out.items():
        u.price(prices.get(name))
    return out


def stage_results(eng: EngineResult) -> dict[str, StageResult]:
    out: dict[str, StageResult] = {}
    for s in eng.shards:
        for name, st in s.stages.items():
            stage = "judge" if name.startswith("judge:") else name
            r = out.setdefault(stage, StageResult(stage=stage, wall_s=eng.wall_s))
            r.cached_prompt_tokens += st.get("cached_prompt_tokens", 0)
            r.prompt_tokens += st["prompt_tokens"]
            r.completion_tokens += st["completion_tokens"]
            r.replayed += st["replayed"] if not s.cached else st["sent"] + st["replayed"]
            if not s.cached:
                r.requests += st["sent"]
                r.new_completion_tokens += st["new_completion_tokens"]
    gen = out.setdefault("generate", StageResult(stage="generate", wall_s=eng.wall_s))
    gen.prompts = sum(s.prompts for s in eng.shards)
    gen.rows = sum(s.completions for s in eng.shards)
    gen.skipped = dict(eng.skipped)
    if "judge" in out:
        out["judge"].rows = gen.prompts
        pf = sum(int(t.get("parse_failures", 0)) for s in eng.shards for t in s.judges.values())
        if pf:
            out["judge"].skipped["parse_failures"] = pf
    if "critique" in out:
        crit = sum_tallies(s.critique for s in eng.shards)
        out["critique"].rows = int(crit.get("rows", 0))
        out["critique"].skipped = {k: int(v) for k, v in crit.get("skipped", {}).items()}
    return out


def upstream_ledger(spec: RunSpec, eng: EngineResult) -> Ledger:
    """What the build is accountable for: prompts read (and dropped on input or at generation), samples
    asked (n per prompt sent), constitution candidates (a critique or label each) and the shards' drops."""
    man = load_manifest(spec.manifest_path, spec.manifest_sha256)
    n = spec.plan.sampling.n
    led = Ledger(notes=dict(man.notes))
    led.prompts.given = man.read
    led.prompts.drops(man.skipped, "input:")
    led.samples.given = n * man.prompts
    for s in eng.shards:
        led.prompts.drops(s.skipped, "generate:")
        led.samples.drops({why: n * k for why, k in s.skipped.items()}, "prompt rejected at generation: ")
        const = led.origin("constitution")
        const.given += int(s.critique.get("rows", 0))
        const.drops(s.critique.get("skipped", {}))
    return led


@flow(name="rlaif-run")
def pipeline_stages(
    recipe: Recipe,
    spec: RunSpec,
    out: str,
    constitution: Any = None,
    gate: dict[str, Any] | None = None,
    publish: bool = True,
) -> RunSummary:
    """shards (generate -> judges + critique, streamed) -> build -> card, summary, artifacts."""
    t0 = time.monotonic()
    counters_before = total_counters()
    out_dir = Path(out)
    eng = run_shards(spec)
    summary = RunSummary(name=recipe.name, out_dir=out, stages=stage_results(eng),
                         usage=usage_table(eng, spec.plan.prices), gate=gate)  # fmt: skip
    tallies = sum_tallies({k: v for k, v in s.judges.items()} for s in eng.shards)
    figures: dict[str, dict[str, Any]] = {}
    for j in spec.plan.judges:
        judge = make_judge(j.spec)
        t = tallies.setdefault(j.spec.key, {})
        t["type"], t["model"] = judge.type, judge.model_name([e.model for e in j.endpoints])
        figures[j.spec.key] = {"type": t["type"], "model": t["model"], **judge.figures(t)}
    t_build = time.monotonic()
    prov = provenance(recipe, tallies, constitution.sha256 if constitution else None)
    files = [
        ShardFiles(rows_path=s.rows_path, cpairs_path=s.cpairs_path, fingerprint=s.fingerprint)
        for s in eng.shards
    ]
    built, plot = build(out_dir, files, recipe.binarize, spec.plan.score_key(recipe.binarize.score),
                        spec.plan.uf_features().arrow_schema, prov, figures, lints=recipe.lints,
                        decontaminate=recipe.decontaminate, ledger=upstream_ledger(spec, eng))  # fmt: skip
    summary.stages["build"] = StageResult(
        stage="build", rows=sum(built.pairs.values()), wall_s=time.monotonic() - t_build
    )
    summary.build = built
    if plot is not None or not (out_dir / "report" / "scores.png").exists():
        plot_report(out_dir, plot)
    crit = sum_tallies(s.critique for s in eng.shards)
    cinfo = None
    if constitution is not None and recipe.critique is not None:
        cinfo = {
            **constitution.provenance(),
            "mode": recipe.critique.mode,
            "per_principle": crit.get("per_principle", {}),
        }
        if crit.get("labels"):
            cinfo["label"] = (f"{crit['labels']} labelled pairs, hard-label position consistency "
                              f"{crit['labels_consistent'] / crit['labels']:.2f}, {crit.get('labels_soft', 0)} soft labels from logprobs")  # fmt: skip
    write_card(out_dir, built, recipe, {"skipped": eng.skipped, "constitution": cinfo, "gate": gate,
                                        "usage": {k: u.model_dump() for k, u in summary.usage.items()}})  # fmt: skip
    summary.wall_s = time.monotonic() - t0
    after = total_counters()
    summary.client = {
        k: getattr(after, k) - getattr(counters_before, k) for k in ("requests", "failures", "retries")
    }
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


def stage_table(summary: RunSummary) -> list[dict[str, Any]]:
    return [{"stage": name, "rows": st.rows, "requests": st.requests, "replayed": st.replayed,
             "prompt_tokens": st.prompt_tokens, "completion_tokens": st.completion_tokens,
             "wall_s": round(st.wall_s, 1), "new_completion_tokens": st.new_completion_tokens,
             "tokens_per_s": round(st.tokens_per_s(), 1), "skipped": st.skipped}
            for name, st in summary.stages.items()]  # fmt: skip


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
            md.append(
                f"\n- judge `{key}` ({f['type']}): parse failures {f['parse_failures']}; {f.get('quality', '')}"
            )
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
    recipe_path: str,
    out: str | None = None,
    limit: int | None = None,
    dated: bool = False,
    no_gate: bool = False,
) -> dict:
    """Entry point for deployments: load the recipe and run everything (into a dated folder if asked)."""
    from flows.recipe import load_recipe

    recipe = load_recipe(recipe_path)
    if limit:
        recipe.prompts.limit = limit
    out_dir = Path(out) if out else recipe.output_dir()
    if dated:
        out_dir = dated_folder(out_dir)
    summary = run_pipeline(recipe, out_dir, Path(recipe_path).parent, no_gate=no_gate)
    return {"out_dir": str(out_dir), "line": summary.one_line()}
