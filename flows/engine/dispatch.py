"""The engine as Prefect: one cached task per shard (all stages of it), then the streaming build.

The flow receives a `RunSpec` (paths, hashes, the recipe, endpoints: a few KB whatever the dataset
size); each task receives a `ShardRef` and the `ShardPlan`.
"""

from __future__ import annotations

import os
import resource
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from prefect import task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from prefect.futures import as_completed
from pydantic import BaseModel, Field

from flows.dataset.atomic_files import read_json
from flows.engine import progress
from flows.engine.budget import BudgetReached, spend_for
from flows.engine.cost_estimate import EstimateTotal
from flows.engine.manifest import Manifest, ShardRef
from flows.engine.plan import expected_by_stage
from flows.engine.shard import ShardPlan, ShardResult, finished, run_shard
from serving.errors import DataError, RlaifError


class RunSpec(BaseModel):
    """The flow's parameters: by reference only."""

    manifest_path: str
    manifest_sha256: str
    plan: ShardPlan
    task_runner: str = "threads"
    dask_address: str | None = None
    dask_workers: int = 2
    shards_in_flight: int = 2
    estimate: EstimateTotal | None = None  # `rlaif estimate`'s figures, for the progress lines


class EngineResult(BaseModel):
    """What the shard stage returns to the pipeline (small: figures, not rows)."""

    shards: list[ShardResult] = Field(default_factory=list)
    wall_s: float = 0.0
    started_at: float = 0.0
    task_runs: int = 0
    skipped: dict[str, int] = Field(default_factory=dict)
    prompts: int = 0

    def requests_sent(self) -> int:
        return sum(s.sent() for s in self.shards)

    def first_judged_s(self) -> float | None:
        t = [s.first_judged_at for s in self.shards if s.first_judged_at and not s.cached]
        return min(t) - self.started_at if t else None


def _retry(task: Any, task_run: Any, state: Any) -> bool:
    """A shard that failed is retried once, unless it stopped at the run's budget."""
    return not isinstance(getattr(state, "data", None), BudgetReached)


@task(name="shard", cache_policy=(INPUTS - "plan") + TASK_SOURCE, retries=1, retry_delay_seconds=5,
      retry_condition_fn=_retry)  # fmt: skip
def shard_task(ref: ShardRef, fingerprint: str, plan: ShardPlan) -> ShardResult:
    """All stages of one shard; `fingerprint` (with the shard's content hash) is the cache key."""
    return run_shard(ref, plan)


def load_manifest(path: str, sha: str) -> Manifest:
    man = Manifest.model_validate(read_json(Path(path)))
    if man.sha256 != sha:
        raise DataError(f"{path}: prompt manifest changed while the run was starting; re-run")
    return man


BATCH_SHARDS_IN_FLIGHT = 128  # batch mode: shards at once per process (a batch takes what they queued)


def shards_at_once(spec: RunSpec) -> int:
    """`shards_in_flight`; in batch mode at least `BATCH_SHARDS_IN_FLIGHT`: a shard waits hours for its
    batches, so two at a time would cut a 50k-prompt run into a hundred rounds of batches."""
    if spec.plan.batch_mode():
        return max(spec.shards_in_flight, BATCH_SHARDS_IN_FLIGHT)
    return spec.shards_in_flight


def task_runner(spec: RunSpec) -> Any:
    """Threads in this process, or Dask: a local cluster of worker processes, or a scheduler address."""
    if spec.task_runner == "dask":
        from prefect_dask import DaskTaskRunner

        if spec.dask_address:
            return DaskTaskRunner(address=spec.dask_address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": spec.dask_workers, "processes": True,
                                              "threads_per_worker": shards_at_once(spec),
                                              "dashboard_address": None})  # fmt: skip
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=shards_at_once(spec))


def all_finished(man: Manifest, plan: ShardPlan) -> bool:
    """Every shard of the manifest already finished with this plan (nothing left to send)."""
    return bool(man.shards) and all(finished(ref, plan) is not None for ref in man.shards)


def start_prefect_api() -> Callable[[], str | None]:
    """Without PREFECT_API_URL, start Prefect's temporary local server in a background thread now, so
    its start-up (7-12 s on 2 cores) overlaps the model server's. Returns `wait()`: blocks until it
    answers and gives its URL (None when a server is configured). `get_client` later finds this same
    server running (it is Prefect's own singleton)."""
    from prefect.settings import PREFECT_API_URL, PREFECT_SERVER_ALLOW_EPHEMERAL_MODE

    if PREFECT_API_URL.value() or not PREFECT_SERVER_ALLOW_EPHEMERAL_MODE.value():
        return lambda: None
    box: dict[str, Any] = {}

    def start() -> None:
        try:
            from prefect.server.api.server import SubprocessASGIServer

            server = SubprocessASGIServer()
            server.start()
            box["url"] = server.api_url
        except Exception as exc:  # handed to whoever waits
            box["error"] = exc

    thread = threading.Thread(target=start, daemon=True, name="rlaif-prefect-api")
    thread.start()

    def wait() -> str:
        thread.join()
        if "error" in box:
            first = (str(box["error"]).strip().splitlines() or [type(box["error"]).__name__])[0]
            raise RlaifError(f"Prefect's temporary server did not start ({first[:200]}); "
                             "set PREFECT_API_URL to a running Prefect server")  # fmt: skip
        return box["url"]

    return wait


@contextmanager
def api_for_workers(spec: RunSpec, url: str | None) -> Iterator[None]:
    """Dask worker processes must report to the same Prefect API as this process: they inherit the
    temporary server's URL through the environment (else each would start a server of its own)."""
    from prefect.settings import PREFECT_API_URL, temporary_settings

    if spec.task_runner != "dask" or url is None:
        yield
        return
    os.environ["PREFECT_API_URL"] = url
    try:
        with temporary_settings({PREFECT_API_URL: url}):
            yield
    finally:
        os.environ.pop("PREFECT_API_URL", None)


def dask_share(spec: RunSpec) -> float:
    """Each Dask worker process gets its share of every endpoint's concurrency limit."""
    if spec.task_runner != "dask":
        return 1.0
    workers = spec.dask_workers
    if spec.dask_address:
        from distributed import Client

        with Client(spec.dask_address, timeout=10) as c:
            workers = max(1, len(c.scheduler_info()["workers"]))
    return 1.0 / max(1, workers)


def run_shards(spec: RunSpec) -> EngineResult:
    """Submit every shard; return their results in shard order (inside a flow)."""
    man = load_manifest(spec.manifest_path, spec.manifest_sha256)
    plan = spec.plan
    spend = spend_for(plan.out_dir, reset=True)  # a budget counts this run's requests only
    fp = plan.fingerprint()
    storage = Path(plan.out_dir) / ".prefect"  # task results and cache records beside the data
    t = shard_task.with_options(result_storage=storage, persist_result=True)
    res = EngineResult(started_at=time.time(), skipped=dict(man.skipped), prompts=man.prompts)
    t0 = time.monotonic()
    stages = expected_by_stage(plan, man.prompts)
    totals = {"prompts": man.prompts, "requests": sum(stages.values())}
    in_process = spec.task_runner != "dask"
    by_index: dict[int, ShardResult] = {}
    with progress.bars(totals, "run"), progress.log_lines(
        stages, lambda: (spend.tokens, spend.usd), budget=plan.budget, priced=bool(plan.prices),
        estimate_tokens=spec.estimate.tokens if spec.estimate else None,
    ) as log:  # fmt: skip
        todo = []
        for ref in man.shards:  # a finished shard is read back here: no task run, no API calls
            if (done := finished(ref, plan)) is not None:
                progress.advance("prompts", ref.prompts)
                _answered_elsewhere(done, plan, sent=False, prompts=ref.prompts)
                by_index[ref.index] = done
            else:
                todo.append(ref)
        if log is not None:
            log.baseline()
        futures = [t.submit(ref=ref, fingerprint=f"{ref.sha256}:{fp}", plan=plan) for ref in todo]
        res.task_runs = len(futures)
        for fut in as_completed(futures):
            r = fut.result()
            if not (Path(r.rows_path).exists() and Path(r.cpairs_path).exists()):
                # Prefect's cache answered for a shard whose files were deleted since: do it again
                # (its journal still answers every request it has)
                r = run_shard(man.shards[r.index], plan)
            if fut.state.name == "Cached" or r.cached:
                r = r.model_copy(update={"cached": True})
            if r.cached or not in_process:  # in-process shards advance the bar prompt by prompt
                progress.advance("prompts", man.shards[r.index].prompts)
                _answered_elsewhere(r, plan, sent=not r.cached, prompts=man.shards[r.index].prompts)
            by_index[r.index] = r
    res.shards = [by_index[i] for i in sorted(by_index)]
    for r in res.shards:
        for k, v in r.skipped.items():
            res.skipped[k] = res.skipped.get(k, 0) + v
    res.wall_s = time.monotonic() - t0
    return res


def _answered_elsewhere(r: ShardResult, plan: ShardPlan, sent: bool, prompts: int) -> None:
    """The progress counts of a shard whose requests this process did not see answered one by one (a
    finished shard read back, a Dask worker's shard); `sent`: its new tokens were sent by this run. What
    the totals counted for its `prompts` and it did not need (fewer pairs to compare) leaves the totals."""
    expected = expected_by_stage(plan, prompts)
    for stage, st in r.stages.items():
        progress.answered(stage, st.sent + st.replayed)
        progress.not_needed(stage, expected.get(stage, 0) - st.sent - st.replayed)
        if sent:
            price = plan.prices.get(stage)
            usd = (
                price.cost(st.new_prompt_tokens, st.new_cached_prompt_tokens, st.new_completion_tokens)
                if price
                else 0.0
            )
            progress.spent(st.new_prompt_tokens + st.new_completion_tokens, usd)


def tune_gc() -> None:
    """Full collections over the millions of long-lived objects that imports leave (torch, datasets,
    Prefect) stalled the event loop ~0.3 s every ~1.2 s at 900 req/s: freeze them, collect less often."""
    import gc

    gc.collect()
    gc.freeze()
    gc.set_threshold(50_000, 50, 1000)


def peak_rss_mb() -> float:
    """Peak resident memory of this process (Linux reports KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
