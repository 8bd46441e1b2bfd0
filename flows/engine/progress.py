"""Progress bars with totals and ETA (tqdm), reachable from tasks running in the same process."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from contextlib import contextmanager

from tqdm import tqdm

from serving.settings import progress_enabled

_BARS: dict[str, tqdm] = {}
_LOCK = threading.Lock()


@contextmanager
def bars(totals: dict[str, int], stage: str) -> Iterator[dict[str, tqdm]]:
    """Open one bar per unit (e.g. batches, completions); tasks advance them via `advance`."""
    made = {}
    disable = not progress_enabled()
    for pos, (unit, total) in enumerate(totals.items()):
        made[unit] = tqdm(total=total, desc=f"{stage} {unit}", unit={"batches": "batch", "completions": "completion", "prompts": "prompt", "items": "item"}.get(unit, unit),
                          position=pos, leave=True, disable=disable, dynamic_ncols=True)  # fmt: skip
    with _LOCK:
        _BARS.update(made)
    try:
        yield made
    finally:
        with _LOCK:
            for unit, bar in made.items():
                bar.close()
                _BARS.pop(unit, None)


def advance(unit: str, k: int = 1) -> None:
    with _LOCK:
        bar = _BARS.get(unit)
    if bar is not None:
        bar.update(k)
