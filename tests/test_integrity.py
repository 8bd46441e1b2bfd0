"""Data integrity against a counting stub server (tests/unique_stub.py), asserted on the SERVER's counts:

1. `seed: null` + a kill after generation + a re-run: every completion of a prompt stays distinct.
2. Chats that share their last user turn are different prompts (no "duplicate" skip).
3. A token budget is used up to within 10% and every request the server answered is journalled.
4. Property (hypothesis): kill the engine at a random request, re-run: every request is journalled
   exactly once, nothing journalled is sent again, and the data equal an uninterrupted run's.

No vLLM: the stub answers generation and judge requests in microseconds.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from pathlib import Path
from typing import Any
from unittest import mock

import pyarrow.parquet as pq
import pytest

import tests.length_judge  # noqa: F401 - registers the `chars` judge
from flows.cli import main
from tests.helpers import journal_records, uf_rows, write_jsonl
from tests.unique_stub import CountingChatStub


def policy_recipe(tmp_path: Path, base_url: str, prompts: Path, sampling: str, extra: str = "",
                  column: str = "prompt", name: str = "integrity") -> Path:  # fmt: skip
    p = tmp_path / f"{name}.yaml"
    p.write_text(f"""name: {name}
prompts: {{path: {prompts}, column: {column}}}
policy:
  endpoints: [{{base_url: {base_url}, model: stub-policy}}]
sampling: {sampling}
judges: [{{type: chars}}]
binarize: {{test_fraction: 0.0}}
{extra}""")
    return p


# --------------------------------------------------------------------------- 1. seed null + kill


def test_seed_null_kill_after_generation_rerun_keeps_completions_distinct(tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Describe the colour number {i} in a few words."}
                                                  for i in range(4)])  # fmt: skip
    with CountingChatStub(mode="unique") as stub:
        recipe = policy_recipe(tmp_path, stub.base_url, prompts,
                               "{n: 4, seed: null, temperature: 1.0, max_tokens: 32}")  # fmt: skip
        out = tmp_path / "out"
        assert main(["run", str(recipe), "--out", str(out)]) == 0
        assert stub.received == 16
        first = {r["prompt_id"]: [c["response"] for c in r["completions"]] for r in uf_rows(out)}
        assert all(len(set(v)) == 4 for v in first.values())  # the first run is fine
        # kill -9 right after the last generation answer was journalled: the journal is complete;
        # the shard's rows/result, its Prefect task result (OUT/.prefect) and the build were never written
        assert len(journal_records(out, "generate")) >= 1
        shutil.rmtree(out / ".prefect")
        for f in [*out.glob("shards/*/result-*.json"), *out.glob("shards/*/rows-*.parquet"),
                  *out.glob("shards/*/cpairs-*.parquet"), out / "build.json"]:  # fmt: skip
            f.unlink()
        assert main(["run", str(recipe), "--out", str(out)]) == 0
        again = {r["prompt_id"]: [c["response"] for c in r["completions"]] for r in uf_rows(out)}
    assert set(again) == set(first)
    for pid, texts in again.items():
        assert len(set(texts)) == 4, f"prompt {pid[:12]}: the re-run cloned completions: {texts}"
    # every completion the server wrote is in the data once; the re-run asked for nothing new
    assert sorted(t for v in again.values() for t in v) == sorted(stub.texts)
    assert stub.received == 16
    assert len({r["k"] for r in journal_records(out, "generate")}) == 16  # one record per sample


def test_shard_files_deleted_under_a_prefect_cache_are_made_again(tmp_path, capsys):
    """Prefect's task cache (OUT/.prefect) outlives a deleted shard's files: the shard is assembled
    again from its journal (it used to crash the build with a FileNotFoundError traceback)."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Name thing number {i}."} for i in range(3)])
    with CountingChatStub(mode="unique") as stub:
        recipe = policy_recipe(tmp_path, stub.base_url, prompts, "{n: 2, seed: 3, max_tokens: 16}")
        out = tmp_path / "out"
        assert main(["run", str(recipe), "--out", str(out)]) == 0
        first = [{k: v for k, v in r.items() if k != "provenance"} for r in uf_rows(out)]
        for f in [
            *out.glob("shards/*/result-*.json"),
            *out.glob("shards/*/rows-*.parquet"),
            out / "build.json",
        ]:
            f.unlink()
        assert main(["run", str(recipe), "--out", str(out)]) == 0
        assert stub.received == 6  # nothing sent again: the journal answered
    assert [{k: v for k, v in r.items() if k != "provenance"} for r in uf_rows(out)] == first


# --------------------------------------------------------------------------- 2. chats as prompts


def test_chats_sharing_the_last_user_turn_are_distinct_prompts(tmp_path):
    last = {"role": "user", "content": "What should I cook for dinner tonight?"}
    chats = [
        [{"role": "system", "content": "You are a French chef who answers in one line."}, last],
        [{"role": "system", "content": "You are a nutritionist focused on vegetables."}, last],
        [{"role": "user", "content": "I have eggs and spinach at home."},
         {"role": "assistant", "content": "Good start: both keep well."}, last],
        [{"role": "user", "content": "I only have rice, beans and a lime."},
         {"role": "assistant", "content": "That can still make a meal."}, last],
    ]  # fmt: skip
    prompts = write_jsonl(tmp_path / "chats.jsonl", [{"messages": m} for m in chats])
    with CountingChatStub(mode="unique") as stub:
        recipe = policy_recipe(tmp_path, stub.base_url, prompts, "{n: 2, max_tokens: 32}", column="messages")
        out = tmp_path / "out"
        assert main(["run", str(recipe), "--out", str(out)]) == 0
    rows = uf_rows(out)
    assert len(rows) == 4, f"{len(rows)} UltraFeedback rows for 4 different chats"
    assert len({r["prompt_id"] for r in rows}) == 4
    assert sorted(json.dumps(r["messages"]) for r in rows) == sorted(json.dumps(m) for m in chats)
    assert stub.received == 8  # every chat was sent, each with its own history
    sent = {json.dumps(c["messages"]) for c in stub.calls}
    assert sent == {json.dumps(m) for m in chats}
    summary = json.loads((out / "summary.json").read_text())
    skipped = summary["stages"]["generate"]["skipped"]
    assert "duplicate" not in skipped, f"prompts skipped: {skipped}"
    assert summary["build"]["lints"]["exact_duplicate_prompts"] == 0
    assert "skipped: duplicate" not in (out / "README.md").read_text()


# --------------------------------------------------------------------------- 3. budget


def test_budget_is_used_up_and_every_answered_request_is_journalled(tmp_path, capsys):
    budget = 20_000
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Write one sentence about topic number {i} for a "
                                                  "curious reader."} for i in range(64)])  # fmt: skip
    # a request's worst case: ~16 prompt tokens + 64 = 0.4% of the budget; the stub answers 56-63
    # words, so the whole run would need ~39,000 tokens
    with CountingChatStub(mode="unique", near_max=8) as stub:
        recipe = policy_recipe(tmp_path, stub.base_url, prompts, "{n: 8, max_tokens: 64}",
                               extra=f"budget: {{tokens: {budget}}}\n")  # fmt: skip
        out = tmp_path / "out"
        code = main(["run", str(recipe), "--out", str(out)])
        err = capsys.readouterr().err.strip()
        received, answered, tokens = stub.received, stub.answered, stub.tokens
    assert code == 4, err[-2000:]
    assert err.count("\n") == 0 and err.startswith("rlaif") and "budget reached" in err, err[-2000:]
    assert tokens <= budget, f"the server reported {tokens:,} tokens over a budget of {budget:,}"
    assert tokens >= 0.9 * budget, f"stopped at {tokens:,} tokens = {tokens / budget:.1%} of the budget"
    # the requests in flight at the stop finished and were journalled: nothing answered is lost
    recs = journal_records(out)
    assert answered == received, f"{received - answered} requests were never answered"
    assert len(recs) == received, f"the server answered {received} requests, {len(recs)} are journalled"
    assert sum(r["pt"] + r["ct"] for r in recs) == tokens
    assert not (out / "build.json").exists()


# --------------------------------------------------------------------------- 4. kill anywhere, resume

from hypothesis import HealthCheck, event, given, settings  # noqa: E402 - the property test's section
from hypothesis import strategies as st  # noqa: E402

CASES = int(os.environ.get("RLAIF_PROPERTY_CASES", "60"))  # random kill points
ASPECTS = ["helpfulness", "honesty"]


class Engine:
    """The engine in-process, as the Prefect runner drives it: `run_shard` per shard, two shard threads."""

    def __init__(self, stub: CountingChatStub, root: Path) -> None:
        self.stub, self.root = stub, root
        self.manifests: dict[tuple[str, int], Any] = {}
        self.reference: dict[tuple[int, int, int], dict[str, list]] = {}
        self.examples = 0

    def recipe(self, n_prompts: int, n: int, shard_size: int, phase: str) -> Any:
        """The recipe, its endpoints at `stub.url(phase)` (the data do not depend on the URL)."""
        from flows.recipe import parse_recipe

        url = self.stub.url(phase)

        return parse_recipe({
            "name": "prop",
            "prompts": {"path": str(self.prompts_file(n_prompts))},
            "policy": {"endpoints": [{"base_url": url, "model": "stub-policy"}]},
            "sampling": {"n": n, "seed": 7, "temperature": 0.9, "max_tokens": 24},
            "shard_size": shard_size,
            "judges": [{"type": "ultrafeedback", "aspects": ASPECTS, "max_tokens": 96,
                        "judge": {"endpoints": [{"base_url": url, "model": "stub-judge"}]}}],
            "binarize": {"test_fraction": 0.3, "rule": "best-vs-random-lower"},
        })  # fmt: skip

    def prompts_file(self, n_prompts: int) -> Path:
        p = self.root / f"prompts-{n_prompts}.jsonl"
        if not p.exists():
            write_jsonl(
                p, [{"prompt": f"Give me a short tip about hobby number {i}."} for i in range(n_prompts)]
            )
        return p

    def plan(self, recipe: Any, out: Path) -> tuple[Any, Any]:
        from flows.engine.plan import make_plan
        from flows.pipeline import prepare_prompts

        key = (recipe.prompts.path, recipe.shard_size)
        if key not in self.manifests:  # the prompt shards are read-only inputs: prepared once
            self.manifests[key] = prepare_prompts(
                recipe, Path(tempfile.mkdtemp(dir=self.root, prefix="prep-"))
            )
        eps = {stage: m.endpoint_list() for stage, m in recipe.served_by_stage().items()}
        return self.manifests[key], make_plan(recipe, out, eps)

    def run(self, recipe: Any, out: Path) -> tuple[list[Any], list[BaseException]]:
        """Every shard (two at a time); what each raised instead of finishing."""
        from flows.engine.shard import run_shard

        man, plan = self.plan(recipe, out)
        done, errors = [], []
        with ThreadPoolExecutor(2) as pool:
            futures = [pool.submit(run_shard, ref, plan) for ref in man.shards]
            for f in futures:
                try:
                    done.append(f.result())
                except BaseException as exc:  # noqa: BLE001 - cancelled by the kill
                    errors.append(exc)
        return done, errors

    def build(self, recipe: Any, out: Path, results: list[Any]) -> dict[str, list]:
        from flows.dataset.build import ShardFiles, build, provenance

        _, plan = self.plan(recipe, out)
        prov = {**provenance(recipe, {}, {}), "created_at": "fixed"}
        files = [ShardFiles(rows_path=r.rows_path, cpairs_path=r.cpairs_path, fingerprint=r.fingerprint)
                 for r in sorted(results, key=lambda r: r.index)]  # fmt: skip
        with skip_datasets_folders():
            build(out, files, recipe.binarize, plan.score_key(),
                  plan.uf_features().arrow_schema, prov, lints=recipe.lints)  # fmt: skip
        tables = {str(f.relative_to(out)): pq.read_table(f) for f in sorted(out.glob("parquet/**/*.parquet"))}
        # provenance names the recipe (its endpoint URLs differ per run here): a stamp, not data
        return {k: (t.drop_columns(["provenance"]) if "provenance" in t.column_names else t).to_pylist()
                for k, t in tables.items()}  # fmt: skip

    def uninterrupted(self, n_prompts: int, n: int, shard_size: int) -> dict[str, list]:
        key = (n_prompts, n, shard_size)
        if key not in self.reference:
            phase = "ref-{}-{}-{}".format(*key)
            recipe = self.recipe(*key, phase)
            out = Path(tempfile.mkdtemp(dir=self.root, prefix="ref-"))
            done, errors = self.run(recipe, out)
            assert not errors and self.stub.received_in(phase) == n_prompts * (n + len(ASPECTS))
            self.reference[key] = self.build(recipe, out, done)
        return self.reference[key]


@contextmanager
def skip_datasets_folders() -> Iterator[None]:
    """The build's Parquet files are what the property compares; the `datasets` folders are a copy of
    them and cost ~90% of a build (fingerprinting), so they are left empty here when the build has
    that step as `_to_datasets` (else the whole build runs)."""
    import flows.dataset.build as b

    if not hasattr(b, "_to_datasets"):
        yield
        return

    def folders_only(staging: Path, fingerprint: str) -> None:
        for name in ("binarized", "ultrafeedback"):
            (staging / name).mkdir()

    with mock.patch.object(b, "_to_datasets", folders_only):
        yield


def raw_journal_lines(out: Path) -> dict[Path, list[bytes]]:
    return {j: j.read_bytes().split(b"\n") for j in sorted(out.glob("shards/*/journal.jsonl"))}


def unfinished_journals(out: Path, empty: bool) -> list[Path]:
    """Journals of shards that did not finish (with `empty`, also those with no record yet)."""
    return [j for j in sorted(out.glob("shards/*/journal.jsonl"))
            if (empty or j.stat().st_size) and not list(j.parent.glob("result-*.json"))]  # fmt: skip


@pytest.fixture(scope="module")
def engine(tmp_path_factory):
    with CountingChatStub(mode="hash") as stub:
        yield Engine(stub, tmp_path_factory.mktemp("prop"))


@settings(max_examples=CASES, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow])  # fmt: skip
@given(data=st.data())
def test_kill_at_any_request_then_resume_equals_an_uninterrupted_run(engine, data):
    from serving.shared import cancel_in_flight, clear_interrupt

    n_prompts = data.draw(st.integers(2, 5), "prompts")
    n = data.draw(st.integers(2, 4), "n")
    shard_size = data.draw(st.integers(2, 3), "shard_size")
    total = n_prompts * (n + len(ASPECTS))  # n generations + one request per aspect, per prompt
    kill_at = data.draw(st.integers(1, total), "kill_at")
    tear = data.draw(st.sampled_from(["none", "half line", "cut last line"]), "tear")
    pick = data.draw(st.integers(0, 5), "torn journal pick")  # drawn up front: which journals
    # are unfinished at the kill depends on timing, and hypothesis needs the same draws on replay
    want = engine.uninterrupted(n_prompts, n, shard_size)
    engine.examples += 1
    run1, run2 = f"x{engine.examples}-run1", f"x{engine.examples}-run2"  # counted apart by the stub
    stub = engine.stub
    with tempfile.TemporaryDirectory(dir=engine.root) as tmp:
        out = Path(tmp)
        # run 1: the stub's kill_at-th arrival is the crash (Ctrl-C's cancel_in_flight: every
        # request in flight is cancelled, the shard threads unwind; that request is never answered)
        stub.kill(run1, kill_at, cancel_in_flight)
        try:
            engine.run(engine.recipe(n_prompts, n, shard_size, run1), out)
        finally:
            stub.release()
            clear_interrupt()
        assert run1 in stub.killed
        # kill -9 mid-write: a torn last line, of a request that was never journalled whole
        targets = unfinished_journals(out, empty=tear == "half line")
        started = len(list(out.glob("shards/*/journal.jsonl")))
        finished = len(list(out.glob("shards/*/result-*.json")))
        event(f"shards finished before the kill: {finished} of {started} started")
        event(f"torn journal: {tear if targets else 'none'}")
        if tear != "none" and targets:
            j = targets[pick % len(targets)]
            body = j.read_bytes()
            if tear == "half line":
                j.write_bytes(body + b'{"k":"' + b"0" * 20)
            else:
                start = body.rstrip(b"\n").rfind(b"\n") + 1
                j.write_bytes(body[: start + (len(body) - start) // 2])
        journalled = sum(len(journal_records_safe(j)) for j in out.glob("shards/*/journal.jsonl"))

        # run 2: to completion
        done, errors = engine.run(engine.recipe(n_prompts, n, shard_size, run2), out)
        assert not errors, errors
        received_1, received_2 = stub.received_in(run1), stub.received_in(run2)
        # run 1's requests in flight at the kill: sent and never journalled (held by the stub, or
        # answered but not yet read when the crash came; a torn line's request too)
        in_flight = received_1 - journalled
        event(f"requests in flight at the kill: {min(in_flight, 4)}{'+' if in_flight >= 4 else ''}")
        assert stub.in_flight_at_kill is not None and in_flight >= stub.in_flight_at_kill >= 1

        # every request key is in the journal exactly once (the raw lines, not the deduplicated dict)
        keys = []
        for j, lines in raw_journal_lines(out).items():
            assert lines[-1] == b"", f"{j}: the journal does not end with a whole line"
            for line in lines[:-1]:
                keys.append(json.loads(line)["k"])  # no torn or garbage line is left behind
        assert len(keys) == len(set(keys)), "a request was journalled twice"
        assert len(keys) == total, f"{len(keys)} journalled requests, {total} expected"
        # nothing journalled was sent again; what was missing was sent once
        assert received_2 == total - journalled
        assert received_1 + received_2 <= total + in_flight
        # the data equal an uninterrupted run's, row for row
        recipe = engine.recipe(n_prompts, n, shard_size, run2)
        got = engine.build(recipe, out, done)
    assert got.keys() == want.keys()
    for name in want:
        assert got[name] == want[name], f"{name} differs from the uninterrupted run"


def journal_records_safe(j: Path) -> list[dict]:
    """Whole, parseable lines of a journal (a torn tail is not a record)."""
    body = j.read_bytes()
    whole = body[: body.rfind(b"\n") + 1]
    out = []
    for line in whole.splitlines():
        try:
            out.append(json.loads(line))
        except ValueError:
            pass
    return out
