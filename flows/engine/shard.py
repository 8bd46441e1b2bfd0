"""The shard runner: one task owns a shard of prompts and streams every stage of it through one client.

Each prompt moves on as soon as its own requests are answered (generate -> all judges and critique
together), so no stage waits for another shard or another prompt. Every answer is journalled first;
the shard's rows are written (atomically) only when all its prompts are done.
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import itertools
import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from pydantic import BaseModel, Field, PrivateAttr

from flows.dataset.atomic_files import read_json, write_json
from flows.dataset.binarize import emitted_pairs
from flows.dataset.rows import PromptResult, extra_pairs, prompt_row
from flows.dataset.schema import binarized_features, uf_features
from flows.engine import progress
from flows.engine.budget import spend_for
from flows.engine.journal import Journal
from flows.engine.manifest import ShardRef, read_shard
from flows.engine.recorded import Meter, RecordingClient, StageStats
from flows.engine.stages import generate
from flows.engine.token_bound import byte_bound, prompt_bound
from flows.recipe import BinarizeSpec, BudgetSpec, Sampling
from judges.contract import Completion, Judge, Judgement, Prompt
from judges.registry import AnyJudgeConfig, judge_class, make_judge, ranking_key
from serving.batch import is_batch
from serving.endpoint import ClientConfig, Endpoint
from serving.price import Price
from serving.shared import io_loop, run_client


class JudgeRun(BaseModel):
    spec: AnyJudgeConfig  # file paths resolved
    endpoints: list[Endpoint] = Field(default_factory=list)  # empty for judges that run locally
    template_sha: str = ""  # `Judge.fingerprint()`: config + templates (+ local model files)

    @property
    def stage(self) -> str:
        """What its requests are journalled and counted under (`Judge.stage_of`)."""
        return judge_class(self.spec.type).stage_of(self.spec)


class ShardPlan(BaseModel):
    """Everything a shard task needs besides its `ShardRef`: small, so Prefect can hash and persist it."""

    out_dir: str
    policy_model: str
    policy_endpoints: list[Endpoint]
    sampling: Sampling
    judges: list[JudgeRun] = Field(default_factory=list)  # every kind of feedback, constitution included
    client: ClientConfig = Field(default_factory=ClientConfig)
    concurrency_share: float = Field(default=1.0, gt=0, le=1, description="this process's share (Dask)")
    prompts_in_flight: int | None = None
    model_ids: dict[str, str] = Field(default_factory=dict)  # served name -> identity of a local folder
    model_dirs: dict[str, str] = Field(
        default_factory=dict
    )  # served name -> local folder (budget's tokenizer)
    prices: dict[str, Price] = Field(default_factory=dict)  # stage ("generate", "judge:<key>", ...) -> price
    budget: BudgetSpec | None = None  # not in `fingerprint`: it limits a run, it does not shape data
    allow_truncated_chosen: bool = False  # `lints.allow_truncated_chosen`: judges' own pairs obey it here
    score: str | None = None  # `binarize.score`: the judge named to rank
    binarize: BinarizeSpec = Field(default_factory=BinarizeSpec)  # what a judge that follows the ranking asks
    _built: list[Judge] | None = PrivateAttr(default=None)
    _score_key: tuple[str] | None = PrivateAttr(default=None)

    def built(self) -> list[Judge]:
        """The judges, built once per plan object (so once per worker process), with no client: each
        shard binds its own journalled client (`Judge.bind`)."""
        if self._built is None:
            self._built = [make_judge(j.spec, None, self.allow_truncated_chosen) for j in self.judges]
        return self._built

    def model_key(self, served: str) -> str:
        """What journal keys use for a model: a local folder's content identity, else its name (two
        folders with the same basename never share journalled answers)."""
        return self.model_ids.get(served, served)

    def fingerprint(self) -> str:
        """What the shard's rows depend on (not where the endpoints are, nor how fast we go)."""
        data = {
            "policy": self.policy_model, "sampling": self.sampling.model_dump(),
            "judges": [[j.spec.key, [e.model for e in j.endpoints], j.template_sha] for j in self.judges],
            "models": self.model_ids, "allow_cut": self.allow_truncated_chosen, "format": 5,
        }  # fmt: skip
        if any(self.follows(j) for j in self.built()):  # their requests depend on the ranking and the rule
            b = self.binarize
            data["follow"] = [self.score_key(), b.rule, b.seed, b.keep_ties, b.min_margin]
        return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()[:16]

    def batch_mode(self) -> bool:
        """Some stage answers through batches (`mode: batch`): its requests wait for a batch to finish."""
        return is_batch(self.policy_endpoints) or any(is_batch(j.endpoints) for j in self.judges)

    def window(self) -> int:
        """Prompts in flight per shard: enough ready requests to keep the policy endpoint full; in batch
        mode every prompt of the shard (a batch takes all that is ready, and answers it all at once)."""
        if self.prompts_in_flight:
            return self.prompts_in_flight
        if self.batch_mode():
            return 1 << 30
        conc = sum(e.max_concurrency for e in self.policy_endpoints) * self.concurrency_share
        return max(8, int(2 * conc / max(1, self.sampling.n)) + 4)

    def chain_tokens(self) -> dict[str, int]:
        """Per stage, the token budget of the longest chain of requests a request of it heads (itself
        included). Waiting requests start longest chain first: generation (which the judges and
        critique of its prompt wait for), then critique -> revision, then judges by max_tokens; so a
        run ends on short requests instead of a late generation -> critique -> revision chain."""
        chains = {j.stage: judge.longest_chain() for j, judge in zip(self.judges, self.built())}
        chains["generate"] = self.sampling.max_tokens + max(chains.values(), default=0)
        return chains

    def follows(self, judge: Judge) -> bool:
        """The judge runs after the ranking judge and compares only the pairs binarization will emit."""
        return judge.follows_ranking(self.score_key())

    def expected_pairs(self, n: int) -> list[tuple[int, int]]:
        """The most pairs a following judge is given for a prompt of n completions (progress totals, the
        estimate): every pair under `all-pairs`, else one."""
        if self.binarize.rule == "all-pairs":
            return list(itertools.combinations(range(n), 2))
        return [(0, 1)] if n >= 2 else []

    def primary_judge(self) -> str | None:
        """The judge whose per-aspect annotations fill the UltraFeedback columns (the first that has any)."""
        return next((j.spec.key for j, judge in zip(self.judges, self.built()) if judge.aspects()), None)

    def score_key(self) -> str | None:
        """The judge whose scores rank completions (`binarize.score`, else the default choice); computed
        once per plan object (asked for every prompt by `judge_prompt`)."""
        if self._score_key is None:
            self._score_key = (ranking_key([j.spec for j in self.judges], self.score) or "",)
        return self._score_key[0] or None

    def scoring(self) -> list[str]:
        """Judges with a score column."""
        return [j.spec.key for j, judge in zip(self.judges, self.built()) if judge.gives_scores]

    def noting(self) -> list[str]:
        """Judges with a notes column."""
        return [j.spec.key for j, judge in zip(self.judges, self.built()) if judge.gives_notes]

    def aspects(self) -> list[str]:
        return next((a for judge in self.built() if (a := judge.aspects())), [])

    def uf_features(self, with_provenance: bool = True) -> Any:
        return uf_features(self.aspects(), self.scoring(), with_provenance, self.noting())


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
    stages: dict[str, StageStats] = Field(default_factory=dict)  # stage -> its counts in this shard
    judges: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> tallies (`Judge.tally`)
    first_judged_at: float | None = None
    wall_s: float = 0.0
    cached: bool = False

    def sent(self) -> int:
        return 0 if self.cached else sum(s.sent for s in self.stages.values())


def _scaled(endpoints: list[Endpoint], share: float) -> list[Endpoint]:
    if share >= 1:
        return endpoints
    return [
        e.model_copy(update={"max_concurrency": max(1, int(e.max_concurrency * share))}) for e in endpoints
    ]


async def _stream(prompts: list[Any], plan: ShardPlan, journal: Journal, stats: dict[str, StageStats],
                  clients: dict[str, Any], count: Callable[[str, int], None]) -> list:  # fmt: skip
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
            functools.partial(count, stage),
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
    judges = [judge.bind(rec(j.stage, j.endpoints[0].model if j.endpoints else ""))
              for j, judge in zip(plan.judges, plan.built())]  # fmt: skip
    window = asyncio.Semaphore(plan.window())
    results: list[PromptResult | str | None] = [None] * len(prompts)

    async def one(k: int, p: Any) -> None:
        async with window:
            comps, reason = await generate(gen, p, plan.policy_model, plan.sampling)
            if reason is None:
                judged = await judge_prompt(plan, judges, p, comps, count)
                results[k] = PromptResult(prompt=p, completions=comps, judged=judged)
            else:
                results[k] = reason
        count(progress.PROMPTS, 1)

    try:
        async with asyncio.TaskGroup() as tg:  # the first failure cancels the rest: no orphan requests
            for k, p in enumerate(prompts):
                tg.create_task(one(k, p))
    except BaseExceptionGroup as group:
        raise _first_leaf(group) from None  # one error that names the endpoint, not a group traceback
    return results


async def judge_prompt(plan: ShardPlan, judges: list[Judge], p: Prompt, comps: list[Completion],
                       count: Callable[[str, int], None] | None = None) -> dict[str, Judgement]:  # fmt: skip
    """Every judge of one prompt (`judges`: bound, in plan order). A judge that follows the ranking waits
    for the ranking judge and is given the pairs binarization will emit from its scores (same seed, rule
    and truncation rule as the build): none when fewer than two completions were scored. `count`: the
    shard attempt's progress counter (`progress.attempt`)."""
    count = count or progress.report
    keys = [j.spec.key for j in plan.judges]
    later = [plan.follows(j) for j in judges]
    first = await asyncio.gather(*(j.judge(p, comps) for j, f in zip(judges, later) if not f))
    judged = dict(zip((k for k, f in zip(keys, later) if not f), first))
    if any(later):
        ranked = judged.get(plan.score_key() or "")
        scores = ranked.scores if ranked is not None else [None] * len(comps)
        pairs = emitted_pairs(p.prompt_id, scores, [c.cut for c in comps], [c.response for c in comps],
                              plan.binarize, plan.allow_truncated_chosen)  # fmt: skip
        most = len(plan.expected_pairs(len(comps)))
        for j, f in zip(judges, later):  # the progress totals counted the most pairs
            if f:
                n = len(comps)
                count(
                    progress.NOT_NEEDED + j.stage,
                    j.requests_per_prompt(n, pairs=most) - j.requests_per_prompt(n, pairs=len(pairs)),
                )
        rest = await asyncio.gather(*(j.judge(p, comps, pairs=pairs) for j, f in zip(judges, later) if f))
        judged.update(zip((k for k, f in zip(keys, later) if f), rest))
    return {k: judged[k] for k in keys}


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
    clients = {"generate": plan.policy_endpoints, **{j.stage: j.endpoints for j in plan.judges}}
    clients = {
        k: run_client(_scaled(eps, plan.concurrency_share), plan.client, plan.out_dir)
        for k, eps in clients.items()
        if eps
    }
    with Journal(folder / "journal.jsonl") as journal:
        count = progress.attempt(ref.name)  # a retry takes back what this shard's failed attempt counted
        results = io_loop().run(_stream(prompts, plan, journal, stats, clients, count))
    res = ShardResult(index=ref.index, name=ref.name, fingerprint=fp, rows_path=str(folder / f"rows-{fp}.parquet"),
                      cpairs_path=str(folder / f"cpairs-{fp}.parquet"))  # fmt: skip
    judges = {j.spec.key: judge for j, judge in zip(plan.judges, plan.built())}
    primary, scoring, noting = plan.primary_judge(), plan.scoring(), plan.noting()
    rows, cpairs = [], []
    for r in results:
        if isinstance(r, str):
            res.skipped[r] = res.skipped.get(r, 0) + 1
            continue
        assert r is not None
        rows.append(prompt_row(r, primary, scoring, noting))
        for key, judgement in r.judged.items():
            judges[key].tally(res.judges.setdefault(key, {"type": judges[key].type}), judgement)
        cpairs += [{**c.model_dump(), "messages": r.prompt.messages + c.chosen} for c in extra_pairs(r)]
    res.prompts, res.completions, res.cpairs = (
        len(rows),
        sum(len(r["completions"]) for r in rows),
        len(cpairs),
    )
    _write_parquet(Path(res.rows_path), rows, plan.uf_features(with_provenance=False).arrow_schema)
    _write_parquet(Path(res.cpairs_path), cpairs, binarized_features().arrow_schema)
    res.stages = dict(stats)
    firsts = [v.first_at for k, v in stats.items() if k.startswith("judge:") and v.first_at]
    res.first_judged_at = min(firsts) if firsts else None
    res.wall_s = time.monotonic() - t0
    write_json(done_path, res.model_dump())
    return res


def _write_parquet(path: Path, rows: list[dict[str, Any]], schema: pa.Schema) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    pq.write_table(pa.Table.from_pylist(rows, schema=schema), tmp)
    tmp.replace(path)
