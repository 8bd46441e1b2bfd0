"""Progress: tqdm bars with totals and ETA on a terminal, plain `rlaif: progress` lines on stderr otherwise
(a log), both fed by the tasks of this process through `advance` and `answered`."""

from __future__ import annotations

import sys
import threading
import time
from collections import Counter, deque
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, TextIO

from tqdm import tqdm

from serving.settings import progress_enabled, progress_log_every

if TYPE_CHECKING:
    from flows.recipe import BudgetSpec

_BARS: dict[str, tqdm] = {}
_LOCK = threading.Lock()
_LOG: ProgressLog | None = None
_ATTEMPTS: dict[str, Counter[str]] = {}  # shard -> what its latest attempt in this process counted
PROMPTS = "\0prompts"  # an attempt's finished prompts (the prompts bar), beside its stages' requests
NOT_NEEDED = "\0not needed:"  # + stage: requests its totals counted that the attempt did not need


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


def answered(stage: str, k: int = 1) -> None:
    """`k` requests of `stage` answered (sent now or replayed from the journal): the requests bar and
    the log's count of that stage."""
    advance("requests", k)
    log = _LOG
    if log is not None:
        log.count(stage, k)


def attempt(shard: str) -> Callable[[str, int], None]:
    """A new attempt at `shard`: takes back what an earlier attempt of it counted in this process (a
    retried shard replays its journal and would count those answers again) and returns the counter this
    attempt reports through: `count(stage, k)`, `count(PROMPTS, k)` for finished prompts and
    `count(NOT_NEEDED + stage, k)` for requests the totals will not see (`not_needed`)."""
    with _LOCK:
        earlier = _ATTEMPTS.pop(shard, Counter())
        tally = _ATTEMPTS[shard] = Counter()
    for unit, k in earlier.items():
        report(unit, -k)

    def count(unit: str, k: int = 1) -> None:
        with _LOCK:
            tally[unit] += k
        report(unit, k)

    return count


def report(unit: str, k: int) -> None:
    """Count `k` of `unit` (a stage, `PROMPTS` or `NOT_NEEDED + stage`) outside any shard attempt."""
    if unit == PROMPTS:
        advance("prompts", k)
    elif unit.startswith(NOT_NEEDED):
        not_needed(unit.removeprefix(NOT_NEEDED), k)
    else:
        answered(unit, k)


def not_needed(stage: str, k: int) -> None:
    """`k` requests of `stage` counted in the totals will not be made (a judge that follows the ranking
    was given fewer pairs than its upper figure): the totals shrink, so done reaches total. A negative
    `k` gives them back (a retried shard's attempt is taken back)."""
    if k == 0:
        return
    with _LOCK:
        bar = _BARS.get("requests")
    if bar is not None and bar.total is not None:
        bar.total = max(bar.n, bar.total - k)
        bar.refresh()
    log = _LOG
    if log is not None:
        log.shrink(stage, k)


def spent(tokens: int, usd: float) -> None:
    """Tokens and USD sent by shards the log cannot see answer by answer (Dask worker processes)."""
    log = _LOG
    if log is not None:
        log.add_spent(tokens, usd)


def _duration(s: float) -> str:
    s = int(round(s))
    if s >= 3600:
        return f"{s // 3600}h{s % 3600 // 60:02d}m"
    return f"{s // 60}m{s % 60:02d}s" if s >= 60 else f"{s}s"


class ProgressLog:
    """One plain line per tick, every `every` seconds and whenever a stage has all its requests answered,
    written by a background thread: the engine only adds to counters under a lock (`count`). The line:
    per stage requests done/total, tokens this run sent (against the estimate), spend against the
    budget, and an ETA from the recent request rate."""

    def __init__(self, totals: dict[str, int], every: float, spend: Callable[[], tuple[int, float]],
                 budget: BudgetSpec | None = None, estimate_tokens: int | None = None,
                 priced: bool = False, stream: TextIO | None = None,
                 clock: Callable[[], float] = time.monotonic) -> None:  # fmt: skip
        self.totals = {k: v for k, v in totals.items() if v > 0}
        self.done = dict.fromkeys(self.totals, 0)
        self.every, self.spend, self.budget, self.estimate_tokens = every, spend, budget, estimate_tokens
        self.priced, self.stream, self.clock = priced, stream, clock
        self.extra_tokens, self.extra_usd = 0, 0.0
        self.lock = threading.Lock()
        self.t0 = clock()
        self.rates: deque[tuple[float, int]] = deque([(self.t0, 0)], maxlen=6)  # (time, done) per line
        self.last: tuple[int, ...] | None = None  # the counts of the last line written
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    # -- fed by the engine (cheap: a lock and an add) ----------------------------------------------
    def count(self, stage: str, k: int = 1) -> None:
        with self.lock:
            if stage not in self.done:
                return
            self.done[stage] += k
            finished = self.done[stage] == self.totals[stage]
        if finished:
            self._wake.set()  # a line at the end of each stage

    def shrink(self, stage: str, k: int) -> None:
        with self.lock:
            if stage not in self.totals:
                return
            self.totals[stage] = max(self.done[stage], self.totals[stage] - k)
            finished = self.done[stage] == self.totals[stage]
        if finished:
            self._wake.set()

    def add_spent(self, tokens: int, usd: float) -> None:
        with self.lock:
            self.extra_tokens += tokens
            self.extra_usd += usd

    def baseline(self) -> None:
        """Requests counted so far (shards finished in an earlier run) do not count toward the rate."""
        with self.lock:
            self.rates.clear()
            self.rates.append((self.clock(), sum(self.done.values())))

    # -- the line ----------------------------------------------------------------------------------
    def line(self) -> str:
        now = self.clock()
        with self.lock:
            done = dict(self.done)
            extra_tokens, extra_usd = self.extra_tokens, self.extra_usd
            eta = self._eta(now, sum(done.values()), sum(self.totals.values()))
        tokens, usd = self.spend()
        tokens, usd = tokens + extra_tokens, usd + extra_usd
        parts = [", ".join(f"{s} {done[s]:,}/{t:,}" for s, t in self.totals.items())]
        tok = f"{tokens:,} tokens sent"
        if self.estimate_tokens:
            tok += f" of ~{self.estimate_tokens:,} estimated"
        parts.append(tok)
        b = self.budget
        if b is not None and b.tokens is not None:
            parts.append(f"budget {tokens:,} of {b.tokens:,} tokens ({tokens / b.tokens:.0%})")
        elif b is not None and b.usd is not None:
            parts.append(f"budget ${usd:,.4f} of ${b.usd:,.2f} ({usd / b.usd:.0%})")
        elif self.priced:
            parts.append(f"${usd:,.4f}")
        parts.append(eta)
        return f"rlaif: progress {_duration(now - self.t0)}: " + "; ".join(parts)

    def _eta(self, now: float, finished: int, total: int) -> str:
        """From the request rate over the last few lines (under `lock`)."""
        if finished >= total:
            return "all requests answered"
        t_then, d_then = self.rates[0]
        self.rates.append((now, finished))
        if finished <= d_then or now <= t_then:
            return "ETA unknown"
        return f"ETA {_duration((total - finished) * (now - t_then) / (finished - d_then))}"

    def emit(self, force: bool = False) -> None:
        """Write a line (unless nothing changed since the last one and not `force`)."""
        with self.lock:
            counts = tuple(self.done.values())
        if counts == self.last and not force:
            return
        text = self.line()
        self.last = counts
        stream = self.stream or sys.stderr
        try:
            stream.write(text + "\n")
            stream.flush()
        except (OSError, ValueError):  # a closed log: progress is not worth failing a run for
            pass

    # -- the thread --------------------------------------------------------------------------------
    def _run(self) -> None:
        while True:
            woke = self._wake.wait(self.every)
            self._wake.clear()
            if self._stop.is_set():
                return
            self.emit(force=not woke)  # the interval's line even when nothing moved (still alive)

    def start(self) -> ProgressLog:
        self._thread = threading.Thread(target=self._run, daemon=True, name="rlaif-progress")
        self._thread.start()
        return self

    def stop(self, final: bool = True) -> None:
        """Stop the thread (joined: no line comes after this) and write the final line if it moved."""
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()
        if final:
            self.emit()


@contextmanager
def log_lines(
    totals: dict[str, int], spend: Callable[[], tuple[int, float]], **kw: Any
) -> Iterator[ProgressLog | None]:
    """Plain progress lines on stderr for the block when the bars are off (`progress_log_every`); the
    last line, with the final counts, is written when the block ends normally, before it returns."""
    global _LOG
    every = progress_log_every()
    if every is None or not any(totals.values()):
        yield None
        return
    log = ProgressLog(totals, every, spend, **kw).start()
    _LOG = log
    with _LOCK:
        _ATTEMPTS.clear()  # a new run: earlier runs' shards are not this one's attempts
    ok = False
    try:
        yield log
        ok = True
    finally:
        _LOG = None
        log.stop(final=ok)
