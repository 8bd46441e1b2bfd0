"""The shard runner: one task owns a shard of prompts and streams every stage of it through one client.

Each prompt moves on as soon as its own requests are answered (generate -> all judges and critique
together), so no stage waits for another shard or another prompt. Every answer is journalled first;
the shard's rows are written (atomically) only when all its prompts are done.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field

from flows.dataset.atomic_files import read_json, write_json
from flows.dataset.rows import constitution_pairs, prompt_row, tally_critique
from flows.dataset.schema import binarized_features, uf_features
from flows.engine import progress
from flows.engine.budget import spend_for
from flows.engine.journal import Journal
from flows.engine.manifest import ShardRef, read_shard
from flows.engine.recorded import Meter, RecordingClient, StageStats
from flows.engine.stages import PromptCritic, generate
from flows.engine.token_bound import byte_bound, prompt_bound
from flows.recipe import BudgetSpec, CritiqueSpec, Sampling
from judges.registry import AnyJudgeConfig, make_judge
from serving.endpoint import ClientConfig, Endpoint
from serving.price import Price
from serving.shared import io_loop, shared_client


class JudgeRun(BaseModel):
    spec: AnyJudgeConfig
    endpoints: list[Endpoint] = Field(default_factory=list)  # empty for judges that run locally
    template_sha: str = ""  # `Judge.fingerprint()`: config + templates (+ local model files)


class ShardPlan(BaseModel):
    """Everything a shard task needs besides its `ShardRef`: small, so Prefect can hash and persist it."""

    out_dir: str
    policy_model: str
    policy_endpoints: list[Endpoint]
    sampling: Sampling
    judges: list[JudgeRun] = Field(default_factory=list)
    critique: CritiqueSpec | None = None
    critique_endpoints: list[Endpoint] = Field(default_factory=list)
    constitution_path: str | None = None
    constitution_sha: str | None = None
    client: ClientConfig = Field(default_factory=ClientConfig)
    concurrency_share: float = Field(default=1.0, gt=0, le=1, description="this process's share (Dask)")
    prompts_in_flight: int | None = None
    model_ids: dict[str, str] = Field(default_factory=dict)  # served name -> identity of a local folder
    model_dirs: dict[str, str] = Field(
        default_factory=dict
    )  # served name -> local folder (budget's tokenizer)
    prices: dict[str, Price] = Field(default_factory=dict)  # stage ("generate", "judge:<key>", ...) -> price
    budget: BudgetSpec | None = None  # not in `fingerprint`: it limits a run, it does not shape data
    allow_truncated_chosen: bool = False  # `lints.allow_truncated_chosen`: constitution pairs obey it here

    def model_key(self, served: str) -> str:
        """What journal keys use for a model: a local folder's content identity, else its name (two
        folders with the same basename never share journalled answers)."""
        return self.model_ids.get(served, served)

    def fingerprint(self) -> str:
        """What the shard's rows depend on (not where the endpoints are, nor how fast we go)."""
        data = {
            "policy": self.policy_model, "sampling": self.sampling.model_dump(),
            "judges": [[j.spec.key, [e.model for e in j.endpoints], j.template_sha] for j in self.judges],
            "critique": self.critique.model_dump(exclude={"judge"}) if self.critique else None,
            "critique_models": [e.model for e in self.critique_endpoints], "constitution": self.constitution_sha,
            "models": self.model_ids, "allow_cut": self.allow_truncated_chosen, "format": 4,
        }  # fmt: skip
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def window(self) -> int:
        """Prompts in flight per shard: enough ready requests to keep the policy endpoint full."""
        if self.prompts_in_flight:
            return self.prompts_in_flight
        conc = sum(e.max_concurrency for e in self.policy_endpoints) * self.concurrency_share
        return max(8, int(2 * conc / max(1, self.sampling.n)) + 4)

    def chain_tokens(self) -> dict[str, int]:
        """Per stage, the token budget of the longest chain of requests a request of it heads (itself
        included). Waiting requests start longest chain first: generation (which the judges and
        critique of its prompt wait for), then critique -> revision, then judges by max_tokens; so a
        run ends on short requests instead of a late generation -> critique -> revision chain."""
        chains = {f"judge:{j.spec.key}": int(getattr(j.spec, "max_tokens", 0) or 0) for j in self.judges}
        if self.critique is not None and self.constitution_path:
            steps = 2 if self.critique.mode != "label" else 0  # critique then revision
            chains["critique"] = steps * self.critique.max_tokens + 1
        chains["generate"] = self.sampling.max_tokens + max(chains.values(), default=0)
        return chains

    def primary_judge(self) -> str | None:
        """The judge whose per-aspect annotations fill the UltraFeedback columns (the first that has any)."""
        return next((j.spec.key for j in self.judges if make_judge(j.spec).aspects()), None)

    def score_key(self, named: str | None) -> str | None:
        """The judge whose scores rank completions: the recipe's `binarize.score`, else the first judge
        that ranks by default (UltraFeedback), else the first judge."""
        if named:
            return named
        keys = [j.spec.key for j in self.judges]
        return next(
            (j.spec.key for j in self.judges if make_judge(j.spec).ranks_by_default), next(iter(keys), None)
        )

    def aspects(self) -> list[str]:
        return next((a for j in self.judges if (a := make_judge(j.spec).aspects())), [])

    def uf_features(self, with_provenance: bool = True) -> Any:
        return uf_features(self.aspects(), [j.spec.key for j in self.judges], with_provenance)


class ShardResult(BaseModel):
    """A finished shard: where its rows are and the figures `build` and the summary add up."""

    index: int
    name: str
    fingerprint: str
    rows_path: str
    cpairs_path: str
    prompts: int = 0
    completions: int = 0
    cpairs: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    stages: dict[str, dict[str, Any]] = Field(default_factory=dict)  # stage -> StageStats figures
    judges: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> tallies
    critique: dict[str, Any] = Field(default_factory=dict)
    first_judged_at: float | None = None
    wall_s: float = 0.0
    cached: bool = False

    def sent(self) -> int:
        return 0 if self.cached else sum(s["sent"] for s in self.stages.values())


def _scaled(endpoints: list[Endpoint], share: float) -> list[Endpoint]:
    if share >= 1:
        return endpoints
    return [
        e.model_copy(update={"max_concurrency": max(1, int(e.max_concurrency * share))}) for e in endpoints
    ]


def _constitution(plan: ShardPlan) -> Any:
    from judges.constitution_file import load_constitution

    return load_constitution(Path(plan.constitution_path or ""))


async def _stream(prompts: list[Any], plan: ShardPlan, journal: Journal, stats: dict[str, StageStats],
                  clients: dict[str, Any]) -> list:  # fmt: skip
    spend = spend_for(plan.out_dir)
    chains = plan.chain_tokens()

    def rec(stage: str, model: str) -> RecordingClient | None:
        stats[stage] = StageStats()
        if stage not in clients:
            return None
        return RecordingClient(
            clients[stage],
            journal,
            stage,
            plan.model_key(model),
            stats[stage],
            lambda: progress.advance("requests"),
            Meter(
                spend,
                plan.budget,
                plan.prices.get(stage),
                plan.concurrency_share,
                prompt_bound(plan.model_dirs.get(model)) if plan.budget else byte_bound,
            ),
            -chains.get(stage, 0),
        )

    gen = rec("generate", plan.policy_model)
    judges = [make_judge(j.spec, rec(f"judge:{j.spec.key}", j.endpoints[0].model if j.endpoints else ""))
              for j in plan.judges]  # fmt: skip
    keys = [j.spec.key for j in plan.judges]
    critic = None
    if plan.critique is not None and plan.constitution_path:
        eps = plan.critique_endpoints
        critic = PromptCritic(
            plan.critique, _constitution(plan), rec("critique", eps[0].model), plan.allow_truncated_chosen
        )
    window = asyncio.Semaphore(plan.window())
    results: list[Any] = [None] * len(prompts)

    async def one(k: int, p: Any) -> None:
        async with window:
            comps, reason = await generate(gen, p, plan.policy_model, plan.sampling)
            if reason is None:
                texts = [c["response"] for c in comps]
                jobs = [j.judge(p.prompt_id, p.prompt, texts, p.messages) for j in judges]
                jobs += [critic.run(p, comps)] if critic else []
                done = await asyncio.gather(*jobs)
                crits, labels = done[-1] if critic else ([], [])
                results[k] = (comps, dict(zip(keys, done)), crits, labels)
            else:
                results[k] = reason
        progress.advance("prompts")

    try:
        async with asyncio.TaskGroup() as tg:  # the first failure cancels the rest: no orphan requests
            for k, p in enumerate(prompts):
                tg.create_task(one(k, p))
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None  # one error that names the endpoint, not a group traceback
    return results


def _first_leaf(exc: BaseException) -> BaseException:
    while isinstance(exc, BaseExceptionGroup):
        exc = exc.exceptions[0]
    return exc


def finished(ref: ShardRef, plan: ShardPlan) -> ShardResult | None:
    """The shard's result when it was already done with this plan (its rows file exists)."""
    done_path = Path(plan.out_dir) / "shards" / ref.name / f"result-{plan.fingerprint()}.json"
    if done_path.exists():
        res = ShardResult.model_validate(read_json(done_path))
        if Path(res.rows_path).exists():
            return res.model_copy(update={"cached": True})
    return None


def run_shard(ref: ShardRef, plan: ShardPlan) -> ShardResult:
    """Process one shard (or find it finished); journalled requests are never sent again."""
    if (done := finished(ref, plan)) is not None:
        return done
    fp = plan.fingerprint()
    folder = Path(plan.out_dir) / "shards" / ref.name
    done_path = folder / f"result-{fp}.json"
    t0 = time.monotonic()
    prompts = read_shard(ref)
    stats: dict[str, StageStats] = {}
    clients = {"generate": plan.policy_endpoints, "critique": plan.critique_endpoints,
               **{f"judge:{j.spec.key}": j.endpoints for j in plan.judges}}  # fmt: skip
    clients = {
        k: shared_client(_scaled(eps, plan.concurrency_share), plan.client)
        for k, eps in clients.items()
        if eps
    }
    with Journal(folder / "journal.jsonl") as journal:
        results = io_loop().run(_stream(prompts, plan, journal, stats, clients))
    res = ShardResult(index=ref.index, name=ref.name, fingerprint=fp, rows_path=str(folder / f"rows-{fp}.parquet"),
                      cpairs_path=str(folder / f"cpairs-{fp}.parquet"))  # fmt: skip
    judges = {j.spec.key: make_judge(j.spec) for j in plan.judges}
    primary = plan.primary_judge()
    rows, cpairs = [], []
    for p, r in zip(prompts, results):
        if isinstance(r, str):
            res.skipped[r] = res.skipped.get(r, 0) + 1
            continue
        comps, judged, crits, labels = r
        rows.append(prompt_row(p, comps, judged, primary, crits))
        for key, judgement in judged.items():
            judges[key].tally(res.judges.setdefault(key, {"type": judges[key].type}), judgement)
        if plan.critique is not None:
            tally_critique(res.critique, crits, labels, plan.allow_truncated_chosen)
        cpairs += [{**c.model_dump(), "messages": p.messages + c.chosen}
                   for c in constitution_pairs(p.messages, p.prompt_id, crits, labels,
                                               plan.allow_truncated_chosen)]  # fmt: skip
    res.prompts, res.completions, res.cpairs = (
        len(rows),
        sum(len(r["completions"]) for r in rows),
        len(cpairs),
    )
    _write_parquet(Path(res.rows_path), rows, plan.uf_features(with_provenance=False).arrow_schema)
    _write_parquet(Path(res.cpairs_path), cpairs, binarized_features().arrow_schema)
    res.stages = {k: v.as_dict() for k, v in stats.items()}
    firsts = [v.first_at for k, v in stats.items() if k.startswith("judge:") and v.first_at]
    res.first_judged_at = min(firsts) if firsts else None
    res.wall_s = time.monotonic() - t0
    write_json(done_path, res.model_dump())
    return res


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    tmp.replace(path)
