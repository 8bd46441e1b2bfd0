"""Map a cached Prefect task over batches: all in flight together, results persisted in the run folder."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

from prefect import Task
from prefect.futures import as_completed

from flows import progress


def result_storage(out_dir: str | Path) -> Path:
    """Task results and cache records live beside the data they describe (a local folder)."""
    return Path(out_dir).resolve() / ".prefect"


def map_cached(
    task: Task[..., str],
    calls: list[dict[str, Any]],
    out_dir: str | Path,
    on_cached: Callable[[str], None] | None = None,
) -> list[str]:
    """Submit one task per call; return the shard paths in call order. `on_cached(path)` runs for
    each batch that came from the cache (so progress bars still reach their totals)."""
    t = task.with_options(result_storage=result_storage(out_dir), persist_result=True)
    futures = [t.submit(**kw) for kw in calls]
    for fut in as_completed(futures):
        progress.advance("batches")
        if on_cached is not None and fut.state.name == "Cached":
            on_cached(fut.result())
    paths = [f.result() for f in futures]
    for i, p in enumerate(paths):
        if not Path(p).exists():  # the run folder was cleaned but the cache survived: redo
            paths[i] = t.with_options(refresh_cache=True).submit(**calls[i]).result()
    return paths


def task_runner(kind: str, address: str | None, max_workers: int) -> Any:
    if kind == "dask":
        from prefect_dask import DaskTaskRunner

        if address:
            return DaskTaskRunner(address=address)
        return DaskTaskRunner(cluster_kwargs={"n_workers": 1, "threads_per_worker": max_workers,
                                              "processes": False})  # fmt: skip
    from prefect.task_runners import ThreadPoolTaskRunner

    return ThreadPoolTaskRunner(max_workers=max_workers)
