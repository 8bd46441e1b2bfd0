"""What a recipe will send before it sends anything: requests, prompt and completion tokens and USD per
stage, from a sample of the prompts rendered through the real request builders (generation and every
judge) by a client that answers with placeholder text and sends nothing."""

from __future__ import annotations

import asyncio
import json
import math
import random
from collections.abc import Awaitable, Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flows.engine.plan import make_plan
from flows.engine.shard import ShardPlan
from flows.engine.stages import generate
from flows.engine.token_bound import chat_tokens, local_tokenizer
from flows.recipe import BudgetSpec, Recipe
from judges.contract import Prompt
from serving.batch import is_batch
from serving.endpoint import ChatResult, Choice
from serving.models import resolve_model
from serving.price import Price
from serving.served import ServedModel

DEFAULT_SAMPLE = 64  # prompts rendered; the figures are scaled to the whole prompt set
DEFAULT_MAX_TOKENS = 512  # a request without max_tokens (as the budget's hold assumes)
HISTORY_RECORDS = 50_000  # journal lines read for the observed answer lengths (the first shards')
CHARS = "characters/4"
FILLER = (
    "The answer starts with the main point and then explains it step by step, with a short example for "
    "each part. It notes the limits of the approach, what can go wrong, and how to check the result. "
    "A reader who is new to the topic gets the key terms in plain words, and an expert gets the details "
    "that matter: the numbers, the trade-offs and the order in which to do things. It ends with a brief "
    "summary and a suggestion for what to try next. "
)


class OnceRequests(BaseModel):
    """Requests a run sends once, whatever the number of prompts (the judge gate): `render` sends them
    through the client it is given."""

    stage: str
    served: ServedModel
    render: Callable[[Any], Awaitable[Any]]


class History(BaseModel):
    """Mean completion tokens per request by stage, seen in a run folder's journals or its summary.json."""

    means: dict[str, float] = Field(default_factory=dict)
    answers: int = 0
    source: str = ""


class StageEstimate(BaseModel):
    """One stage or judge ("generate", "judge:<key>", "critique", "gate") for the whole prompt set."""

    stage: str
    requests: int = 0
    prompt_tokens: int = 0  # with answers of the expected length (observed mean, else max_tokens)
    completion_tokens: int = 0
    usd: float | None = None  # None: no price for this stage's endpoint
    prompt_tokens_max: int = 0  # with every answer at max_tokens (judges read longer answers)
    completion_tokens_max: int = 0
    usd_max: float | None = None
    observed_mean: float | None = None  # completion tokens per request in an earlier run, if any
    counted_by: str = CHARS  # "tokenizer (<folder>)" or "characters/4"
    once: bool = False  # sent once per run, not per prompt


class EstimateTotal(BaseModel):
    """The sum over stages (`usd`: of the priced stages; None when no stage has a price)."""

    requests: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    usd: float | None = None
    prompt_tokens_max: int = 0
    completion_tokens_max: int = 0
    usd_max: float | None = None

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens

    @property
    def tokens_max(self) -> int:
        return self.prompt_tokens_max + self.completion_tokens_max


class Estimate(BaseModel):
    """What `rlaif estimate` prints and writes with `--json`."""

    prompts: int
    sample: int
    stages: list[StageEstimate] = Field(default_factory=list)
    total: EstimateTotal = Field(default_factory=EstimateTotal)
    history: History | None = None
    requests_sent: int = 0  # the estimate itself sends nothing
    notes: list[str] = Field(default_factory=list)

    def engine_total(self) -> EstimateTotal:
        """The stages' total without the once-per-run requests (the gate): what a budget counts and
        what the progress lines count as sent."""
        return _total([s for s in self.stages if not s.once])

    def observed(self) -> bool:
        return any(s.observed_mean is not None for s in self.stages)

    def line(self, budget: BudgetSpec | None = None) -> str:
        """One line: requests, tokens (expected and at max_tokens), USD, and the budget beside them."""
        t = self.total
        if self.observed():
            tokens = (f"~{t.tokens:,} tokens ({t.prompt_tokens:,} prompt + {t.completion_tokens:,} completion "
                      f"at the answer lengths of an earlier run; at most {t.tokens_max:,} with every answer "
                      "at max_tokens)")  # fmt: skip
        else:
            tokens = (f"at most {t.tokens_max:,} tokens ({t.prompt_tokens_max:,} prompt + "
                      f"{t.completion_tokens_max:,} completion with every answer at max_tokens; no earlier "
                      "run to take answer lengths from)")  # fmt: skip
        if any(s.counted_by == CHARS for s in self.stages if s.requests):
            tokens += f", counted as {CHARS}"
        if t.usd is None:
            usd = "USD n/a (no prices)"
        elif self.observed():
            usd = f"~${t.usd:,.4f} (at most ${t.usd_max or 0:,.4f})"
        else:
            usd = f"at most ${t.usd_max or 0:,.4f}"
        line = f"rlaif: estimate: {self.prompts:,} prompts -> {t.requests:,} requests, {tokens}, {usd}"
        once = _total([s for s in self.stages if s.once])
        if once.requests:  # the progress lines and a budget count the stages without it
            n = once.tokens if self.observed() else once.tokens_max
            line += (
                f"; the judge gate's {once.requests:,} requests (~{n:,} tokens) are in it, not under a budget"
            )
        return line + "; " + budget_words(self.engine_total(), budget, self.observed())

    def table(self) -> str:
        """A row per stage and judge, a total row, and how the figures were made."""
        head = ("stage", "requests", "prompt tokens", "completion tokens", "USD", "at max_tokens", "answers")
        rows = [head]

        def usd(x: float | None) -> str:
            return "-" if x is None else f"{x:,.4f}"

        for s in [*self.stages, None]:
            r = s or self.total
            if s is None:
                basis = ""
            elif s.observed_mean is not None:
                basis = f"observed mean {s.observed_mean:.1f} tokens (max_tokens {_per(s):.0f})"
            else:
                basis = f"max_tokens ({_per(s):.0f})"
            cap = f"{r.prompt_tokens_max:,} + {r.completion_tokens_max:,}"
            if r.usd_max is not None:
                cap += f", ${r.usd_max:,.4f}"
            name = "total" if s is None else s.stage + (" (once)" if s.once else "")
            rows.append((name, f"{r.requests:,}", f"{r.prompt_tokens:,}", f"{r.completion_tokens:,}", usd(r.usd),
                         cap, basis))  # fmt: skip
        widths = [max(len(row[i]) for row in rows) for i in range(len(head))]
        lines = [
            (
                "  "
                + "  ".join(
                    c.rjust(w) if 0 < i < 5 else c.ljust(w) for i, (c, w) in enumerate(zip(row, widths))
                )
            ).rstrip()
            for row in rows
        ]
        return "\n".join([*lines, *(f"  {n}" for n in self.notes)])


def _per(s: StageEstimate) -> float:
    """A stage's mean max_tokens per request."""
    return s.completion_tokens_max / s.requests if s.requests else 0.0


def budget_words(total: EstimateTotal, budget: BudgetSpec | None, observed: bool) -> str:
    """The budget beside the estimate (`total`: what the budget counts, the gate left out), and whether
    the run is expected to reach it."""
    if budget is None:
        return "no budget"
    if budget.tokens is not None:
        limit, exp, cap = (
            f"{budget.tokens:,} tokens",
            total.tokens / budget.tokens,
            total.tokens_max / budget.tokens,
        )
    else:
        assert budget.usd is not None
        limit, exp, cap = (
            f"${budget.usd:,.2f}",
            (total.usd or 0.0) / budget.usd,
            (total.usd_max or 0.0) / budget.usd,
        )
    stop = "the run would stop there (exit 4; re-run to continue)"
    if not observed:
        return f"budget {limit}: the upper figure is {cap:.0%} of it" + (
            f", {stop} at worst" if cap > 1 else ""
        )
    if exp > 1:
        return f"budget {limit}: the estimate is {exp:.0%} of it, expect {stop}"
    return f"budget {limit}: the estimate is {exp:.0%} of it" + (
        f" (the upper figure {cap:.0%}: with longer answers {stop})" if cap > 1 else ""
    )


# -- counting --------------------------------------------------------------------------------------
class TokenCounter:
    """A stage's prompt tokens: the local model's tokenizer and chat template when there is one, else
    characters/4 plus 3 per message and 3 per request (OpenAI's chat overhead); and placeholder answers
    of a given number of tokens (plain English prose)."""

    def __init__(self, model_dir: str | None) -> None:
        self.model_dir = model_dir
        self.tok = local_tokenizer(model_dir)
        self._ids: list[int] = []
        self._texts: dict[int, str] = {}

    @property
    def method(self) -> str:
        return CHARS if self.tok is None else f"tokenizer ({Path(str(self.model_dir)).name})"

    def prompt_tokens(self, messages: list[dict[str, str]]) -> int:
        if self.tok is not None:
            return chat_tokens(self.tok, messages)
        chars = sum(len(m.get("content") or "") for m in messages)
        return math.ceil(chars / 4) + 3 * len(messages) + 3

    def text(self, tokens: int) -> str:
        """About `tokens` tokens of prose (exactly, re-tokenized alone, with a tokenizer)."""
        if tokens <= 0:
            return ""
        if tokens not in self._texts:
            if self.tok is None:
                self._texts[tokens] = (FILLER * (4 * tokens // len(FILLER) + 1))[: 4 * tokens]
            else:
                while len(self._ids) < tokens:
                    self._ids += self.tok.encode(FILLER * 8, add_special_tokens=False)
                self._texts[tokens] = self.tok.decode(self._ids[:tokens])
        return self._texts[tokens]


@dataclass
class _Seen:
    prompt: int
    completion: int
    cap: int  # max_tokens x n


class RenderingClient:
    """A chat client that sends nothing: it counts each request a builder makes (prompt tokens,
    max_tokens) and answers with placeholder text of `length(max_tokens)` tokens."""

    def __init__(self, counter: TokenCounter, length: Callable[[int], int], seen: list[_Seen]) -> None:
        self.counter, self.length, self.seen = counter, length, seen

    async def chat(self, messages: list[dict[str, str]], **params: Any) -> ChatResult:
        n = int(params.get("n") or 1)
        cap = int(params.get("max_tokens") or DEFAULT_MAX_TOKENS)
        k = self.length(cap)
        prompt = self.counter.prompt_tokens(messages)
        self.seen.append(_Seen(prompt=prompt, completion=k * n, cap=cap * n))
        choice = Choice(text=self.counter.text(k), finish_reason="stop")
        return ChatResult(choices=[choice] * n, prompt_tokens=prompt, completion_tokens=k * n)


def fit_length(caps: list[int], mean: float) -> Callable[[int], int]:
    """Placeholder length per request: min(max_tokens, L), with L chosen so that the stage's requests
    average `mean` tokens (requests with a small max_tokens, e.g. a 1-token label, keep theirs)."""
    if not caps or sum(caps) <= mean * len(caps):
        return _as_is
    lo, hi = 0, max(caps)
    while lo < hi:
        mid = (lo + hi) // 2
        if sum(min(c, mid) for c in caps) < mean * len(caps):
            lo = mid + 1
        else:
            hi = mid
    return lambda cap: min(cap, lo)


def _as_is(cap: int) -> int:
    return cap


# -- inputs ----------------------------------------------------------------------------------------
def sample_prompts(prompts: Iterable[Prompt], k: int, seed: int = 0) -> tuple[list[Prompt], int]:
    """A seeded uniform sample of `k` prompts (reservoir, one pass) and how many there are."""
    rng, picked, n = random.Random(seed), [], 0
    for p in prompts:
        n += 1
        if len(picked) < k:
            picked.append(p)
        elif (j := rng.randrange(n)) < k:
            picked[j] = p
    return picked, n


def read_history(out: Path, max_records: int = HISTORY_RECORDS) -> History | None:
    """Mean completion tokens per request by stage from the run folder's journals (the first
    `max_records` answers), else from its summary.json; None when the folder has neither."""
    sums: dict[str, list[int]] = {}
    read = 0
    for path in sorted(out.glob("shards/*/journal.jsonl")):
        with path.open("rb") as f:
            for raw in f:
                try:
                    rec = json.loads(raw)
                except ValueError:  # a torn last line
                    continue
                if "ct" not in rec or "s" not in rec:
                    continue  # a refused request
                acc = sums.setdefault(rec["s"], [0, 0])
                acc[0] += int(rec["ct"])
                acc[1] += 1
                read += 1
                if read >= max_records:
                    break
        if read >= max_records:
            break
    if read:
        return History(means={s: t / n for s, (t, n) in sums.items()}, answers=read,
                       source=f"{read:,} journalled answers in {out}/shards")  # fmt: skip
    summary = out / "summary.json"
    try:
        usage = json.loads(summary.read_text()).get("usage") or {}
    except (OSError, ValueError):
        return None
    means, answers = {}, 0
    for stage, u in usage.items():
        k = int(u.get("requests", 0)) + int(u.get("replayed", 0))
        if k:
            means[stage] = int(u.get("completion_tokens", 0)) / k
            answers += k
    return History(means=means, answers=answers, source=str(summary)) if means else None


def model_dir(served: ServedModel) -> str | None:
    """The local folder of a model served by the embedded vLLM (its tokenizer counts), else None."""
    return resolve_model(served.model) if served.is_local else None


def plan_for(recipe: Recipe, out: Path, recipe_dir: Path | None = None) -> ShardPlan:
    return make_plan(
        recipe, out, {k: m.endpoint_list() for k, m in recipe.served_by_stage().items()}, recipe_dir
    )


# -- the estimate ----------------------------------------------------------------------------------
async def _render(plan: ShardPlan, prompts: list[Prompt], counters: dict[str, TokenCounter],
                  lengths: dict[str, Callable[[int], int]], once: list[OnceRequests]) -> dict[str, list[_Seen]]:  # fmt: skip
    seen: dict[str, list[_Seen]] = {}

    def client(stage: str) -> RenderingClient:
        return RenderingClient(counters[stage], lengths.get(stage, _as_is), seen.setdefault(stage, []))

    gen = client("generate")
    judges = [judge.bind(client(judge.stage)) for judge in plan.built() if judge.uses_endpoint]
    for p in prompts:
        completions, _ = await generate(gen, p, plan.policy_model, plan.sampling)
        pairs = plan.expected_pairs(len(completions))  # a judge that follows the ranking: its most pairs
        await asyncio.gather(*(j.judge(p, completions, pairs=pairs) if plan.follows(j) else j.judge(p, completions)
                               for j in judges))  # fmt: skip
    for o in once:
        await o.render(client(o.stage))
    return seen


def _run(coro: Awaitable[dict[str, list[_Seen]]]) -> dict[str, list[_Seen]]:
    """Run the rendering on a fresh event loop (in a thread of its own when this one already runs a loop)."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)  # type: ignore[arg-type]
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        return pool.submit(asyncio.run, coro).result()  # type: ignore[arg-type]


def estimate_plan(plan: ShardPlan, prompts: Iterable[Prompt], model_dirs: dict[str, str | None],
                  sample: int = DEFAULT_SAMPLE, history: History | None = None,
                  once: list[OnceRequests] | None = None) -> Estimate:  # fmt: skip
    """The estimate for `prompts` (all of them; `sample` are rendered). `model_dirs`: stage -> local
    model folder (its tokenizer counts) or None; `history`: observed answer lengths, if any."""
    once = once or []
    picked, count = sample_prompts(prompts, max(1, sample))
    by_dir: dict[str | None, TokenCounter] = {}
    counters: dict[str, TokenCounter] = {}
    for stage, d in (dict(model_dirs) | {o.stage: model_dir(o.served) for o in once}).items():
        if d not in by_dir:
            by_dir[d] = TokenCounter(d)  # one tokenizer per model folder
        counters[stage] = by_dir[d]
    upper = _run(_render(plan, picked, counters, {}, once))
    means = {s: m for s, m in (history.means if history else {}).items() if s in upper}
    expected = upper
    if means:
        lengths = {s: fit_length([r.cap for r in upper[s]], m) for s, m in means.items()}
        expected = _run(_render(plan, picked, counters, lengths, once))
    prices: dict[str, Price] = dict(plan.prices) | {o.stage: o.served.price for o in once if o.served.price}
    once_stages = {o.stage for o in once}
    est = Estimate(prompts=count, sample=len(picked), history=history if means else None)
    for stage, reqs in upper.items():
        if not reqs:
            continue
        f = 1.0 if stage in once_stages else (count / len(picked) if picked else 0.0)
        exp, price = expected[stage], prices.get(stage)
        row = StageEstimate(
            stage=stage, requests=round(len(reqs) * f), prompt_tokens=round(sum(r.prompt for r in exp) * f),
            completion_tokens=round(sum(r.completion for r in exp) * f),
            prompt_tokens_max=round(sum(r.prompt for r in reqs) * f),
            completion_tokens_max=round(sum(r.cap for r in reqs) * f), observed_mean=means.get(stage),
            counted_by=counters[stage].method, once=stage in once_stages,
        )  # fmt: skip
        if price is not None:
            row.usd = round(price.cost(row.prompt_tokens, 0, row.completion_tokens), 6)
            row.usd_max = round(price.cost(row.prompt_tokens_max, 0, row.completion_tokens_max), 6)
        est.stages.append(row)
    est.total = _total(est.stages)
    est.notes = _notes(est)
    endpoints = {"generate": plan.policy_endpoints, **{j.stage: j.endpoints for j in plan.judges}}
    batched = [s.stage for s in est.stages if s.usd is not None and is_batch(endpoints.get(s.stage, []))]
    if batched:
        est.notes.append(f"USD of {', '.join(batched)}: at the batch price (`mode: batch`: the recipe's prices "
                         "times price.batch)")  # fmt: skip
    return est


def _total(stages: list[StageEstimate]) -> EstimateTotal:
    t = EstimateTotal()
    for s in stages:
        t.requests += s.requests
        t.prompt_tokens += s.prompt_tokens
        t.completion_tokens += s.completion_tokens
        t.prompt_tokens_max += s.prompt_tokens_max
        t.completion_tokens_max += s.completion_tokens_max
        if s.usd is not None:
            t.usd = round((t.usd or 0.0) + s.usd, 6)
            t.usd_max = round((t.usd_max or 0.0) + (s.usd_max or 0.0), 6)
    return t


def _notes(est: Estimate) -> list[str]:
    notes = [
        f"{est.sample} of {est.prompts:,} prompts rendered through the request builders; 0 requests sent"
    ]
    by_method: dict[str, list[str]] = {}
    for s in est.stages:
        by_method.setdefault(s.counted_by, []).append(s.stage)
    for method, stages in by_method.items():
        how = (
            "exact, the model's chat template" if method != CHARS else "an approximation: no local tokenizer"
        )
        notes.append(f"prompt tokens of {', '.join(stages)}: {method} ({how})")
    if est.history is not None:
        notes.append(f"completion tokens: observed mean per request from {est.history.source}; 'at "
                     "max_tokens' is the upper figure")  # fmt: skip
    else:
        notes.append("completion tokens: every answer at max_tokens (an upper figure; a journal or summary.json "
                     "in the run folder gives the observed mean)")  # fmt: skip
    if any(s.usd is not None for s in est.stages):
        notes.append("USD at the recipe's prices, with no prefix-cache discount")
    if any(s.once for s in est.stages):
        notes.append("(once): the judge gate's labelled pairs, sent once per run unless gate.json has them")
    notes.append("the whole prompt set: requests already journalled in the run folder are not sent again")
    return notes


def estimate_recipe(recipe: Recipe, out: Path, recipe_dir: Path | None = None, sample: int = DEFAULT_SAMPLE,
                    prompts: Iterable[Prompt] | None = None, plan: ShardPlan | None = None,
                    once: list[OnceRequests] | None = None) -> Estimate:  # fmt: skip
    """The estimate of a recipe's run into `out` (whose journals or summary.json, if any, give the observed
    answer lengths). `prompts`: the prompt set (default: read from the recipe's `prompts:`)."""
    from flows.dataset.prompts import iter_prompts

    plan = plan or plan_for(recipe, out, recipe_dir)
    if prompts is None:
        src = recipe.prompts
        columns = sorted({c for judge in plan.built() for c in judge.columns()})
        prompts = iter_prompts(src.path, src.column, src.id_column, src.split, src.limit, src.max_prompt_chars,
                               base=recipe_dir, columns=columns)  # fmt: skip
    dirs = {stage: model_dir(m) for stage, m in recipe.served_by_stage().items()}
    return estimate_plan(plan, prompts, dirs, sample, read_history(out), once)
