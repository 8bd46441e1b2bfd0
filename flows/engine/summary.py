"""A run's figures: per-stage results, token usage and cost, the upstream ledger, the summary written to
OUT/summary.json and the Prefect artifacts made from it."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

from flows.dataset.build import BuildResult
from flows.dataset.gate_result import GateResult
from flows.dataset.ledger import Ledger
from flows.engine.budget import Usage
from flows.engine.dispatch import EngineResult, RunSpec, load_manifest
from flows.engine.shard import ShardPlan
from serving.price import Price


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
    gate: GateResult | None = None
    prefix_cache: dict[str, dict[str, Any]] = Field(default_factory=dict)  # vLLM /metrics, per endpoint
    stopped: str | None = None  # why the run stopped before its datasets (e.g. "gate failed")
    wall_s: float = 0.0  # the pipeline flow: generation, judges, critique, build
    total_s: float | None = None  # the whole `rlaif run`: checks, servers, gate, flow, training
    client: dict[str, Any] = Field(default_factory=dict)

    def one_line(self) -> str:
        g = self.stages.get("generate")
        b = self.build
        pairs = sum(v for k, v in (b.pairs if b else {}).items() if k.endswith("prefs"))
        sent = sum(s.requests for s in self.stages.values())
        rate = f"{g.tokens_per_s() if g else 0.0:.1f} tokens/s" if sent else "all from the run's journal"
        return (f"done: {g.prompts if g else 0} prompts, {g.rows if g else 0} completions, "
                f"{g.completion_tokens if g else 0} tokens ({rate}), {pairs} pairs "
                f"in {self.total_s if self.total_s is not None else self.wall_s:.0f}s -> {self.out_dir}")  # fmt: skip


def usage_table(eng: EngineResult, prices: dict[str, Price]) -> dict[str, Usage]:
    """Tokens, prefix-cache hits and cost per stage and per judge ("generate", "judge:<key>", ...)."""
    out: dict[str, Usage] = {}
    for s in eng.shards:
        for name, st in s.stages.items():
            out.setdefault(name, Usage()).add(st, s.cached)
    for name, u in out.items():
        u.price(prices.get(name))
    return out


def stage_results(eng: EngineResult, plan: ShardPlan) -> dict[str, StageResult]:
    """Per stage: "generate", "judge" (every `judge:<key>` stage) and any stage a judge names itself
    (a constitution judge's "critique": its rows are its candidate pairs, its skips their drops)."""
    out: dict[str, StageResult] = {}
    for s in eng.shards:
        for name, st in s.stages.items():
            stage = "judge" if name.startswith("judge:") else name
            r = out.setdefault(stage, StageResult(stage=stage, wall_s=eng.wall_s))
            r.cached_prompt_tokens += st.cached_prompt_tokens
            r.prompt_tokens += st.prompt_tokens
            r.completion_tokens += st.completion_tokens
            r.replayed += st.replayed if not s.cached else st.sent + st.replayed
            if not s.cached:
                r.requests += st.sent
                r.new_completion_tokens += st.new_completion_tokens
    gen = out.setdefault("generate", StageResult(stage="generate", wall_s=eng.wall_s))
    gen.prompts = sum(s.prompts for s in eng.shards)
    gen.rows = sum(s.completions for s in eng.shards)
    gen.skipped = dict(eng.skipped)
    stage_of = {j.spec.key: "judge" if j.stage.startswith("judge:") else j.stage for j in plan.judges}
    if "judge" in out:
        out["judge"].rows = gen.prompts
    for s in eng.shards:
        for key, t in s.judges.items():
            r = out.get(stage_of.get(key, "judge"))
            if r is None:
                continue
            if r.stage != "judge":
                r.rows += int(t.get("candidates", 0))
            for why, k in [("parse_failures", t.get("parse_failures", 0)), *t.get("dropped", {}).items()]:
                if k:
                    r.skipped[why] = r.skipped.get(why, 0) + int(k)
    return out


def upstream_ledger(spec: RunSpec, eng: EngineResult) -> Ledger:
    """What the build is accountable for: prompts read (and dropped on input or at generation), samples
    asked (n per prompt sent), the candidate pairs judges made themselves (a critique or label each) and
    the shards' drops."""
    man = load_manifest(spec.manifest_path, spec.manifest_sha256)
    n = spec.plan.sampling.n
    led = Ledger(notes=dict(man.notes))
    led.prompts.given = man.read
    led.prompts.drops(man.skipped, "input:")
    led.samples.given = n * man.prompts
    for s in eng.shards:
        led.prompts.drops(s.skipped, "generate:")
        led.samples.drops({why: n * k for why, k in s.skipped.items()}, "prompt rejected at generation: ")
        for t in s.judges.values():  # pairs the judges made themselves, under their origin
            if t.get("candidates"):
                acc = led.origin(str(t["origin"]))
                acc.given += int(t["candidates"])
                acc.drops(t.get("dropped", {}))
    return led


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
