"""Batch mode (`mode: batch` on an endpoint): requests are queued, cut into OpenAI batch JSONL, submitted
with the `openai` SDK (files, batches), polled, and answered from the output file by custom_id. Each
batch is recorded in RUN/batches/ before it is waited on, so a re-run re-attaches instead of paying again."""

from __future__ import annotations

import asyncio
import hashlib
import json
import re
import time
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from serving.atomic_write import atomic_write_text
from serving.client import RETRYABLE_STATUS, WRONG_ENDPOINT, LLMClient, chat_body
from serving.endpoint import ChatResult, ClientConfig, Counters, Endpoint, RequestRejected
from serving.errors import ConfigError, EndpointError

BATCH_URL = "/v1/chat/completions"
COMPLETION_WINDOW = "24h"
RUNNING = {"validating", "in_progress", "finalizing", "cancelling"}  # anything else is final
LIST_SLACK_S = 600  # a pending record's batch is looked for among batches created up to this much earlier


def is_batch(endpoints: list[Endpoint]) -> bool:
    """True when a stage's endpoints answer through batches (checked by `check_batch_endpoints`)."""
    return any(e.mode == "batch" for e in endpoints)


def check_batch_endpoints(endpoints: list[Endpoint], stage: str) -> None:
    """A batch-mode stage has exactly one endpoint: a batch goes to one provider, whole."""
    if is_batch(endpoints) and len(endpoints) != 1:
        raise ConfigError(f"{stage}: `mode: batch` takes one endpoint per stage, got {len(endpoints)} "
                          "(a batch goes to one provider); keep one, or use mode: online")  # fmt: skip


def custom_id(body: dict[str, Any], sample: int | None) -> str:
    """A request's id in a batch: the hash of its canonical body (model included) and its sample index,
    so n samples with equal bodies (`seed: null`) are n lines, and a re-run computes the same ids."""
    raw = json.dumps([body, sample], sort_keys=True, ensure_ascii=False, separators=(",", ":"))
    return "rq-" + hashlib.sha256(raw.encode()).hexdigest()[:40]


def batch_line(cid: str, body: dict[str, Any]) -> bytes:
    """One line of a batch input file (OpenAI's format; vLLM's `run_batch` reads the same)."""
    line = {"custom_id": cid, "method": "POST", "url": BATCH_URL, "body": body}
    return json.dumps(line, ensure_ascii=False, separators=(",", ":")).encode() + b"\n"


class LineError(BaseModel):
    """A line of an output or error file that is not an answer: its HTTP status (0: none) and why."""

    status: int = 0
    detail: str = ""


def read_output(text: str, base_url: str) -> dict[str, ChatResult | LineError]:
    """Answers by custom_id from a batch output or error file (OpenAI's lines, or vLLM `run_batch`'s)."""
    out: dict[str, ChatResult | LineError] = {}
    for raw in text.splitlines():
        if not raw.strip():
            continue
        line = json.loads(raw)
        cid = line.get("custom_id")
        if not isinstance(cid, str):
            continue
        resp = line.get("response") or {}
        status = int(resp.get("status_code") or 0)
        body = resp.get("body")
        if status == 200 and isinstance(body, dict) and not line.get("error"):
            try:
                out[cid] = LLMClient._parse(body, base_url)
                continue
            except (ValueError, KeyError, TypeError, AttributeError) as exc:
                out[cid] = LineError(status=0, detail=f"unparseable answer: {exc}")
                continue
        out[cid] = LineError(status=status, detail=_detail(line.get("error"), body))
    return out


def _detail(error: Any, body: Any) -> str:
    """The message of a failed line: OpenAI's `error` {code, message}, a body's {error: {message}}, or
    vLLM's error string / ErrorResponse."""
    for item in (error, body):
        if isinstance(item, dict) and isinstance(item.get("error"), dict):
            item = item["error"]
        if isinstance(item, dict) and (item.get("message") or item.get("code")):
            code = f"{item['code']}: " if item.get("code") and item.get("message") else ""
            return (code + str(item.get("message") or item.get("code")))[:300].replace("\n", " ")
        if isinstance(item, str) and item:
            return item[:300].replace("\n", " ")
    return "no answer"


class BatchRecord(BaseModel):
    """A submitted batch, as RUN/batches/<batch id>.json holds it (`pending-<input file id>.json` while
    it is being created: a re-run finds its batch by the input file id, or knows it was never made)."""

    id: str | None = None
    base_url: str
    model: str
    input_file_id: str = ""
    custom_ids: list[str] = Field(default_factory=list)
    created: float = Field(default_factory=time.time)


def _safe(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]", "_", name)


def write_record(path: Path, rec: BatchRecord) -> None:
    """Atomically: a killed run leaves the old record or the new one."""
    atomic_write_text(path, rec.model_dump_json())


class BatchClient:
    """`chat` like `LLMClient`, answered through batches of one endpoint. Create it inside its event loop.

    A call is queued; the queue is cut into a batch `batch_window_s` after its first request or at
    `batch_max_requests`; the batch is uploaded, recorded in `folder`, polled every `batch_poll_s`, and each
    caller gets its line of the output file. A call whose custom_id a recorded batch holds waits for that
    batch instead (a re-run re-attaches). Equal calls in flight share one line."""

    def __init__(self, endpoints: list[Endpoint], config: ClientConfig | None, folder: Path) -> None:
        check_batch_endpoints(endpoints, "batch client")
        self.endpoint = endpoints[0]
        self.config = config or ClientConfig()
        self.folder = Path(folder)
        self.counters = Counters()
        self._waiting: dict[str, asyncio.Future[ChatResult]] = {}  # custom_id -> its answer
        self._callers: dict[str, int] = {}  # custom_id -> callers awaiting it
        self._bodies: dict[str, dict[str, Any]] = {}  # custom_id -> body, while it is waited for
        self._owner: dict[str, BatchRecord] = {}  # custom_id -> the batch that answers it now
        self._queued: dict[str, dict[str, Any]] = {}  # custom_id -> body, for the next cut
        self._attempts: dict[str, int] = {}  # custom_id -> lines answered with a retryable status
        self._stored: dict[str, BatchRecord] | None = None  # custom_id -> latest recorded batch
        self._followed: dict[str, asyncio.Task[None]] = {}  # batch id -> its poller
        # answers nobody was waiting for any more (a shard that failed, to be retried; a re-attached batch's
        # lines for shards not started yet): the next ask takes them, so nothing is submitted twice
        self._found: dict[str, tuple[ChatResult | LineError, BatchRecord]] = {}
        self._timer: asyncio.TimerHandle | None = None
        self._tasks: set[asyncio.Task[None]] = set()
        self._loading: asyncio.Task[None] | None = None
        self._sdk: Any = None

    # -- the caller's side --------------------------------------------------------------------
    async def chat(
        self,
        messages: list[dict[str, str]],
        *,
        n: int = 1,
        temperature: float | None = None,
        top_p: float | None = None,
        max_tokens: int | None = None,
        seed: int | None = None,
        response_format: dict[str, Any] | None = None,
        logprobs: bool = False,
        top_logprobs: int | None = None,
        extra_body: dict[str, Any] | None = None,
        priority: int = 0,
        sample: int | None = None,
    ) -> ChatResult:
        """One request, answered when its batch is (`priority` does not apply: a batch has no order)."""
        body = chat_body(messages, n=n, temperature=temperature, top_p=top_p, max_tokens=max_tokens, seed=seed,
                         response_format=response_format, logprobs=logprobs, top_logprobs=top_logprobs,
                         extra_body=extra_body) | {"model": self.endpoint.model}  # fmt: skip
        cid = custom_id(body, sample)
        if self._stored is None:  # read once; a caller cancelled meanwhile does not stop the reading
            if self._loading is None:
                self._loading = self._spawn(self._read_records())
            await asyncio.shield(self._loading)
        self._callers[cid] = self._callers.get(cid, 0) + 1
        fut = self._waiting.get(cid)
        try:
            if fut is None:
                fut = asyncio.get_running_loop().create_future()
                fut.add_done_callback(lambda f: f.cancelled() or f.exception())  # no "never retrieved" noise
                self._waiting[cid], self._bodies[cid] = fut, body
                self._route(cid)
            return await asyncio.shield(fut)
        finally:
            self._callers[cid] -= 1
            if not self._callers[cid]:
                del self._callers[cid]
                if fut is not None and not fut.done() and cid in self._queued:  # cancelled, not sent yet
                    del self._queued[cid]
                    self._forget(cid)

    def _route(self, cid: str) -> None:
        """Answer from what was read already, else wait for the recorded batch that holds this request,
        else queue it for the next cut."""
        if cid in self._found:
            self._settle(cid, *self._found.pop(cid))
            return
        rec = (self._stored or {}).get(cid)
        if rec is not None and rec.id is not None:
            task = self._followed.get(rec.id)
            if task is None or not task.done():  # the batch is followed (or now starts to be)
                self._owner[cid] = rec
                if task is None:
                    self._follow(rec, ours=False)
                return
            # that batch was read and has no answer for it (it failed or expired): submit it again
        self._queue(cid)

    def _queue(self, cid: str) -> None:
        self._queued[cid] = self._bodies[cid]
        self._owner.pop(cid, None)
        if len(self._queued) >= self.endpoint.batch_max_requests:
            self._cut()
        elif self._timer is None:
            self._timer = asyncio.get_running_loop().call_later(self.endpoint.batch_window_s, self._cut)

    def _cut(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        items, self._queued = self._queued, {}
        if items:
            self._spawn(self._submit(items))

    def _spawn(self, coro: Any) -> asyncio.Task[None]:
        task = asyncio.get_running_loop().create_task(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    # -- answers ------------------------------------------------------------------------------
    def _forget(self, cid: str) -> None:
        self._waiting.pop(cid, None)
        self._bodies.pop(cid, None)
        self._owner.pop(cid, None)

    def _fail(self, cid: str, exc: BaseException) -> None:
        fut = self._waiting.get(cid)
        self._forget(cid)
        if fut is not None and not fut.done():
            fut.set_exception(exc)

    def _settle(self, cid: str, out: ChatResult | LineError, rec: BatchRecord) -> None:
        """Hand a line to its caller: an answer, a refusal (as online mode raises it), or a retry."""
        fut = self._waiting.get(cid)
        if fut is None or fut.done():
            return
        if cid not in self._callers:  # its caller is gone (its shard failed): kept for the next ask
            self._forget(cid)
            fut.cancel()
            if not (isinstance(out, LineError) and out.status in RETRYABLE_STATUS):
                self._found[cid] = (out, rec)
            return
        if isinstance(out, ChatResult):
            c = self.counters
            c.prompt_tokens += out.prompt_tokens
            c.cached_prompt_tokens += out.cached_prompt_tokens
            c.completion_tokens += out.completion_tokens
            self._forget(cid)
            fut.set_result(out)
            return
        self.counters.failures += 1
        where = f"HTTP {out.status} from batch {rec.id} at {self.endpoint.base_url}: {out.detail}"
        if out.status in RETRYABLE_STATUS:
            tries = self._attempts[cid] = self._attempts.get(cid, 0) + 1
            if tries <= self.config.max_retries:  # a failed line is not charged: it goes in the next batch
                self.counters.retries += 1
                self._queue(cid)
                return
            self._fail(cid, EndpointError(f"gave up after {tries} batch attempts: {where}"))
        elif out.status in WRONG_ENDPOINT:
            self._fail(cid, EndpointError(f"{where} (check the endpoint's model name and api_key_env; "
                                          "re-run after fixing it)"))  # fmt: skip
        elif out.status:
            self._fail(cid, RequestRejected(where, out.status))
        else:
            self._fail(cid, EndpointError(f"batch {rec.id} at {self.endpoint.base_url} gave no answer to a "
                                          f"request ({out.detail}); re-run to submit it again"))  # fmt: skip

    # -- batches ------------------------------------------------------------------------------
    def _api(self) -> Any:
        if self._sdk is None:
            from openai import AsyncOpenAI  # only batch mode pays for the import

            ep = self.endpoint
            self._sdk = AsyncOpenAI(base_url=ep.base_url, api_key=ep.api_key() or "unused",
                                    max_retries=self.config.max_retries, timeout=self.config.timeout_s)  # fmt: skip
        return self._sdk

    async def _call(self, what: str, coro: Any) -> Any:
        """An SDK call; its failure is one line naming the endpoint (the SDK already retried it)."""
        import openai

        where = f"batch API at {self.endpoint.base_url}: {what}"
        try:
            return await coro
        except openai.APIStatusError as exc:
            hint = ""
            if exc.status_code in WRONG_ENDPOINT:
                hint = (" (check base_url, model and api_key_env; an endpoint without /files and /batches, "
                        "such as `vllm serve`, takes mode: online)")  # fmt: skip
            msg = str(exc).replace("\n", " ")[:200]
            raise EndpointError(f"{where}: HTTP {exc.status_code}: {msg}{hint}") from None
        except openai.APIError as exc:
            raise EndpointError(f"{where}: {type(exc).__name__}: {str(exc)[:200]}") from None

    async def _read_records(self) -> None:
        """The batches earlier runs recorded for this endpoint, by custom_id (the latest batch wins). The
        files are read before any await: other clients of the run folder resolve their pending records
        (and remove them) meanwhile."""
        recs: list[tuple[Path, BatchRecord]] = []
        for path in sorted(self.folder.glob("*.json")) if self.folder.is_dir() else []:
            try:
                rec = BatchRecord.model_validate_json(path.read_text())
            except FileNotFoundError:  # another client's pending record, resolved just now
                continue
            if rec.base_url == self.endpoint.base_url and rec.model == self.endpoint.model:
                recs.append((path, rec))
        try:
            found = [rec if rec.id is not None else await self._created(path, rec) for path, rec in recs]
        except BaseException:
            self._loading = None  # the next request tries again
            raise
        stored: dict[str, BatchRecord] = {}
        for rec in sorted((r for r in found if r is not None), key=lambda r: r.created):
            stored.update(dict.fromkeys(rec.custom_ids, rec))
        self._stored = stored

    async def _created(self, path: Path, rec: BatchRecord) -> BatchRecord | None:
        """A run killed while creating a batch left a pending record: find the batch made from its input
        file (then record it), or drop the record (the batch was never made, nothing was charged)."""

        async def find() -> Any:
            async for b in self._api().batches.list(limit=100):  # newest first, page by page
                if b.input_file_id == rec.input_file_id:
                    return b
                if b.created_at < rec.created - LIST_SLACK_S:  # older than the record: not further down
                    return None
            return None

        b = await self._call("list batches", find())
        if b is not None:
            rec.id = b.id
            write_record(self.folder / f"{_safe(b.id)}.json", rec)
        path.unlink(missing_ok=True)
        return rec if b is not None else None

    async def _submit(self, items: dict[str, dict[str, Any]]) -> None:
        """Upload one cut, record it, create the batch, record its id, then follow it."""
        ep, api = self.endpoint, self._api()
        rec = BatchRecord(base_url=ep.base_url, model=ep.model, custom_ids=list(items))
        for cid in items:
            self._owner[cid] = rec
        try:
            data = b"".join(batch_line(cid, body) for cid, body in items.items())
            f = await self._call(
                "upload", api.files.create(file=("rlaif-batch.jsonl", data), purpose="batch")
            )
            rec.input_file_id = f.id
            pending = self.folder / f"pending-{_safe(f.id)}.json"
            write_record(pending, rec)  # before the batch exists: a kill now leaves a way to find it
            b = await self._call("create batch", api.batches.create(
                input_file_id=f.id, endpoint=BATCH_URL, completion_window=COMPLETION_WINDOW))  # fmt: skip
            rec.id = b.id
            write_record(self.folder / f"{_safe(b.id)}.json", rec)  # before it is waited on
            pending.unlink(missing_ok=True)
        except Exception as exc:
            for cid in items:
                if self._owner.get(cid) is rec:
                    self._fail(cid, exc)
            return
        self.counters.batches += 1
        self.counters.requests += len(items)
        assert self._stored is not None  # read before the first request was queued
        self._stored.update(dict.fromkeys(items, rec))
        self._follow(rec, ours=True)

    def _follow(self, rec: BatchRecord, ours: bool) -> None:
        assert rec.id is not None
        self._followed[rec.id] = self._spawn(self._poll(rec, ours))

    async def _poll(self, rec: BatchRecord, ours: bool) -> None:
        """Wait for the batch, then answer its lines. Lines it lacks: an error when this run submitted
        it (one line naming the batch); submitted again when an earlier run did (they were not charged)."""
        api = self._api()
        try:
            while True:
                b = await self._call(f"batch {rec.id}", api.batches.retrieve(rec.id))
                if b.status not in RUNNING:
                    break
                await asyncio.sleep(self.endpoint.batch_poll_s)
            found: dict[str, ChatResult | LineError] = {}
            for file_id in (b.error_file_id, b.output_file_id):  # answers win over errors
                if file_id:
                    content = await self._call(f"batch {rec.id} results", api.files.content(file_id))
                    found.update(read_output(content.text, self.endpoint.base_url))
        except Exception as exc:
            for cid in rec.custom_ids:
                if self._owner.get(cid) is rec:
                    self._fail(cid, exc)
            return
        mine = [cid for cid in rec.custom_ids if self._owner.get(cid) is rec]
        missing = 0
        for cid in rec.custom_ids:
            out = found.get(cid)
            if self._owner.get(cid) is not rec:
                if not ours and out is not None and cid not in self._waiting:
                    self._found[cid] = (out, rec)  # asked for later (a shard that has not started yet)
                continue
            if out is None or (isinstance(out, LineError) and out.status == 0 and b.status != "completed"):
                missing += 1
            else:
                self._settle(cid, out, rec)
        if not missing:
            return
        if not ours:
            for cid in mine:
                if self._owner.get(cid) is rec and cid in self._callers:
                    self._queue(cid)
                elif self._owner.get(cid) is rec:  # nobody asks any more: the next ask submits it
                    self._waiting[cid].cancel()
                    self._forget(cid)
            return
        error = self._batch_error(b, missing, len(rec.custom_ids))
        for cid in mine:
            if self._owner.get(cid) is rec:
                self._fail(cid, error)

    def _batch_error(self, b: Any, missing: int, total: int) -> EndpointError:
        where = f"batch {b.id} at {self.endpoint.base_url}"
        first = ""
        errs = getattr(getattr(b, "errors", None), "data", None) or []
        if errs:
            first = f" ({_detail(errs[0].model_dump(), None)})"
        if b.status == "failed":
            return EndpointError(f"{where} failed{first}: none of its {total} requests were answered; "
                                 "fix the cause and re-run to submit them again")  # fmt: skip
        return EndpointError(f"{where} {b.status}{first}: {missing} of its {total} requests unanswered; "
                             "the answered ones are journalled, re-run to submit the rest")  # fmt: skip

    # -- the client interface the engine reads --------------------------------------------------
    def limits(self) -> dict[str, dict[str, int]]:
        """No concurrency to adapt: a batch holds every request that is ready."""
        return {}

    async def aclose(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        if self._sdk is not None:
            await self._sdk.close()
