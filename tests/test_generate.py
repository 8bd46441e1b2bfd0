"""Generate against the real vLLM server: rows with every field, and a re-run that costs nothing."""

from __future__ import annotations

from pathlib import Path

from flows.cli import main
from flows.dataset.prompts import prompt_id_for
from tests.helpers import journal_records, metric, uf_rows, write_jsonl

FIELDS = {"sample_index", "model", "response", "sampling", "finish_reason", "completion_tokens"}
TEXTS = [
    "Name a primary colour.",
    "What is 2 + 2?",
    "Say hello in French.",
    "Give one word that rhymes with cat.",
]


def recipe(tmp_path: Path, port: int, prompts: list[dict], extra: str = "") -> Path:
    data = write_jsonl(tmp_path / "p.jsonl", prompts)
    p = tmp_path / "r.yaml"
    p.write_text(f"name: g\nprompts:\n  path: {data}\n  max_prompt_chars: 100000\npolicy:\n  port: {port}\n"
                 f"sampling:\n  n: 2\n  max_tokens: 16\n  temperature: 0.7\n  seed: 1\nshard_size: 3\n{extra}")  # fmt: skip
    return p


def test_generate_writes_rows_and_rerun_sends_nothing(vllm_server, tmp_path, capsys):
    path, out = recipe(tmp_path, vllm_server.port, [{"prompt": t} for t in TEXTS]), tmp_path / "run"
    assert main(["generate", str(path), "--out", str(out)]) == 0
    assert len(list((out / "shards").iterdir())) == 2  # 4 prompts, shards of 3
    rows = uf_rows(out)
    assert {r["prompt_id"] for r in rows} == {prompt_id_for(t) for t in TEXTS}
    for r in rows:
        assert [c["sample_index"] for c in r["completions"]] == [0, 1]
        for c in r["completions"]:
            assert FIELDS <= set(c) and c["finish_reason"] in ("stop", "length")
            assert 0 < c["completion_tokens"] <= 16
            assert c["sampling"]["max_tokens"] == 16 and c["sampling"]["seed"] is not None
    assert len(journal_records(out, "generate")) == 8
    assert not list(out.rglob("*.tmp"))
    capsys.readouterr()

    before = metric(vllm_server, "vllm:request_success_total")
    assert main(["generate", str(path), "--out", str(out)]) == 0
    assert metric(vllm_server, "vllm:request_success_total") == before
    assert "0 requests" in capsys.readouterr().out
    assert len(journal_records(out, "generate")) == 8 and len(uf_rows(out)) == 4


def test_prompt_longer_than_context_is_skipped_and_counted(vllm_server, tmp_path):
    huge = "word " * 3000  # > 2048 tokens, under max_prompt_chars
    prompts = [{"prompt": huge}, {"prompt": "Say yes."}, {"prompt": "  "}, {"prompt": "Say yes."}]
    out = tmp_path / "o"
    assert main(["generate", str(recipe(tmp_path, vllm_server.port, prompts)), "--out", str(out)]) == 0
    import json

    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["generate"]["skipped"] == {"empty": 1, "duplicate": 1, "too_long": 1}
    assert len(uf_rows(out)) == 1
