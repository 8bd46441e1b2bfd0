"""`rlaif: progress` lines on stderr when it is not a terminal: per stage done/total, tokens, budget, ETA;
written by a thread that is gone when the run returns, the last line with the final counts."""

from __future__ import annotations

import io
import json
import re
import threading
from pathlib import Path

from flows.cli import main
from flows.engine.progress import ProgressLog, log_lines
from flows.recipe import BudgetSpec
from tests.helpers import write_jsonl
from tests.stubs import FaultProxy
from tests.unique_stub import CountingChatStub


def recipe_for(tmp: Path, prompts: Path, base_url: str) -> Path:
    """5 prompts x 2 answers in 3 shards, UltraFeedback then pairwise (the emitted pairs only)."""
    recipe = tmp / "r.yaml"
    recipe.write_text(f"""name: progress
prompts: {{path: {prompts}}}
policy:
  endpoints: [{{base_url: {base_url}, model: stub-policy}}]
sampling: {{n: 2, max_tokens: 24}}
shard_size: 2
judges: [{{type: ultrafeedback, max_tokens: 128}}, {{type: pairwise}}]
binarize: {{test_fraction: 0.0}}
""")
    return recipe


def test_a_run_off_a_terminal_writes_progress_lines_with_the_final_totals(tmp_path, capsys, monkeypatch):
    monkeypatch.delenv("RLAIF_PROGRESS", raising=False)  # bars off because stderr is captured (no TTY)
    monkeypatch.setenv("RLAIF_PROGRESS_EVERY", "0.01")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Name a colour, number {i}."} for i in range(5)])
    with CountingChatStub(mode="hash") as stub:
        assert (
            main(["run", str(recipe_for(tmp_path, prompts, stub.base_url)), "--out", str(tmp_path / "out")])
            == 0
        )
        tokens = stub.tokens
    assert not [t for t in threading.enumerate() if t.name == "rlaif-progress"]  # nothing can write now
    err = capsys.readouterr().err.splitlines()
    lines = [x for x in err if x.startswith("rlaif: progress ")]
    assert lines, err
    last = lines[-1]
    assert "generate 10/10, judge:ultrafeedback 20/20, judge:pairwise " in last, last
    # pairwise compares only the pairs binarization emits (UltraFeedback ranks): at most 1 per prompt, both
    # orders; the total shrinks to what was needed, so done == total
    done, total = re.search(r"judge:pairwise (\d+)/(\d+)", last).groups()
    assert done == total and int(done) % 2 == 0 and int(done) <= 10, last
    assert f"{tokens:,} tokens sent" in last and "all requests answered" in last, last
    assert err[-1] == last  # the final line is the last thing the run wrote to stderr


def test_a_retried_shard_is_not_counted_twice(tmp_path, capsys, monkeypatch):
    """One request answered 404 fails its shard; Prefect retries the shard, which replays what its journal
    has. The last line still reads done == total for every stage (it read 12/10 generations before)."""
    monkeypatch.delenv("RLAIF_PROGRESS", raising=False)
    monkeypatch.setenv("RLAIF_PROGRESS_EVERY", "0.01")
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"Name a fruit, number {i}."} for i in range(5)])
    with (
        CountingChatStub(mode="hash") as stub,
        FaultProxy(
            stub.base_url, fault=lambda req, n: (404, {"error": "gone for a moment"}, {}) if n == 13 else None
        ) as proxy,
    ):
        assert (
            main(["run", str(recipe_for(tmp_path, prompts, proxy.base_url)), "--out", str(tmp_path / "out")])
            == 0
        )
        assert proxy.calls > proxy.forwarded  # the 404 happened, and the run went on
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    assert sum(u["replayed"] for u in summary["usage"].values()) > 0  # the retried shard replayed answers
    last = [x for x in capsys.readouterr().err.splitlines() if x.startswith("rlaif: progress ")][-1]
    assert "generate 10/10, judge:ultrafeedback 20/20, judge:pairwise " in last, last
    done, total = re.search(r"judge:pairwise (\d+)/(\d+)", last).groups()
    assert done == total and "all requests answered" in last, last


def test_the_line_reads_counts_budget_estimate_and_eta():
    now = [100.0]
    spent = [0, 0.0]
    out = io.StringIO()
    log = ProgressLog({"generate": 8, "judge:pairwise": 16, "judge:local": 0}, 30.0, lambda: (spent[0], spent[1]),
                      budget=BudgetSpec(tokens=10_000), estimate_tokens=5_000, stream=out,
                      clock=lambda: now[0])  # fmt: skip
    assert log.line().endswith("ETA unknown")  # nothing answered yet
    log.count("generate", 8)
    log.count("judge:pairwise", 4)
    spent[0] = 2_500
    now[0] += 60
    line = log.line()
    assert line.startswith("rlaif: progress 1m00s: generate 8/8, judge:pairwise 4/16; ")
    assert "judge:local" not in line  # a stage with no requests has no count
    assert "2,500 tokens sent of ~5,000 estimated" in line and "budget 2,500 of 10,000 tokens (25%)" in line
    assert line.endswith("ETA 1m00s")  # 12 answered in 60 s, 12 to go
    log.count("judge:pairwise", 12)
    log.stop()  # never started: writes the final line only
    assert out.getvalue().splitlines()[-1].endswith("generate 8/8, judge:pairwise 16/16; 2,500 tokens sent of "
                                                    "~5,000 estimated; budget 2,500 of 10,000 tokens (25%); "
                                                    "all requests answered")  # fmt: skip
    usd = ProgressLog({"generate": 1}, 30.0, lambda: (10, 0.5), budget=BudgetSpec(usd=2.0), clock=lambda: 0.0)
    assert "budget $0.5000 of $2.00 (25%)" in usd.line()


def test_no_lines_on_a_terminal_or_when_turned_off(monkeypatch):
    monkeypatch.setenv("RLAIF_PROGRESS", "1")  # bars on: they show progress
    with log_lines({"generate": 4}, lambda: (0, 0.0)) as log:
        assert log is None
    monkeypatch.delenv("RLAIF_PROGRESS")
    monkeypatch.setenv("RLAIF_PROGRESS_EVERY", "0")
    with log_lines({"generate": 4}, lambda: (0, 0.0)) as log:
        assert log is None
