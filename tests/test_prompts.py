"""Prompt loading through `datasets`: every format, ids, skips and the bundled set."""

from __future__ import annotations

import datasets
import pytest

from flows.dataset.prompts import load_prompts, prompt_id_for
from serving.errors import DataError
from tests.helpers import MT_BENCH, write_jsonl

ROWS = [{"prompt": "Hello there", "source": "a"}, {"prompt": "  Hello   there "}, {"prompt": "Second"}]


@pytest.mark.parametrize("fmt", ["jsonl", "parquet", "csv", "folder", "dict-folder"])
def test_every_format_reads_the_same(tmp_path, fmt):
    ds = datasets.Dataset.from_list([{"prompt": r["prompt"], "source": r.get("source", "")} for r in ROWS])
    path = tmp_path / f"p.{fmt}"
    if fmt == "jsonl":
        write_jsonl(path, ROWS)
    elif fmt == "parquet":
        ds.to_parquet(str(path))
    elif fmt == "csv":
        ds.to_csv(str(path), index=False)
    elif fmt == "folder":
        ds.save_to_disk(str(path))
    else:
        datasets.DatasetDict({"train": ds}).save_to_disk(str(path))
    ps = load_prompts(str(path))
    assert [r.prompt for r in ps.rows] == ["Hello there", "Second"]
    assert ps.skipped == {"duplicate": 1}  # same text after whitespace normalisation
    assert ps.rows[0].prompt_id == prompt_id_for("Hello   there")
    assert ps.rows[0].messages == [{"role": "user", "content": "Hello there"}]


def test_messages_column_and_id_column(tmp_path):
    path = write_jsonl(tmp_path / "m.jsonl", [{"id": 7, "messages": [
        {"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hi?"}]}])  # fmt: skip
    ps = load_prompts(str(path), column="messages", id_column="id")
    assert ps.rows[0].prompt_id == "7" and ps.rows[0].prompt == "Hi?" and len(ps.rows[0].messages) == 2


def test_too_long_and_empty_are_skipped_and_counted(tmp_path):
    path = write_jsonl(
        tmp_path / "p.jsonl", [{"prompt": "x" * 50}, {"prompt": ""}, {"prompt": None}, {"prompt": "ok"}]
    )
    ps = load_prompts(str(path), max_prompt_chars=10)
    assert [r.prompt for r in ps.rows] == ["ok"] and ps.skipped == {"too_long": 1, "empty": 2}


def test_bundled_prompts_and_mt_bench_turns():
    bundled = load_prompts("default")
    assert len(bundled.rows) >= 40 and not bundled.skipped
    if MT_BENCH.exists():
        mt = load_prompts(str(MT_BENCH), column="turns", limit=5)
        assert len(mt.rows) == 5 and all(r.prompt for r in mt.rows)


def test_missing_split_is_named(tmp_path):
    datasets.DatasetDict({"test": datasets.Dataset.from_list(ROWS)}).save_to_disk(str(tmp_path / "d"))
    with pytest.raises(DataError, match="no split 'train'"):
        load_prompts(str(tmp_path / "d"))


def test_sample_seed_takes_any_prompt_id():
    """Bug B: ids from a prompt file's `id_column` need not be hex (the seed once parsed id[:8] as hex)."""
    from flows.engine.stages import sample_seed

    seeds = {(pid, i): sample_seed(0, pid, i) for pid in ("q-17", "xyz", "Ünïcode id", "0") for i in (0, 1)}
    assert all(isinstance(s, int) and 0 <= s < 2**31 - 1 for s in seeds.values())
    assert len(set(seeds.values())) == len(seeds)  # per prompt and per sample
    assert sample_seed(0, "q-17", 1) == seeds[("q-17", 1)] and sample_seed(None, "q-17", 0) is None
