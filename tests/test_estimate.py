"""`rlaif estimate`: requests, tokens and USD per stage before any request; 0 requests sent, every
request of the run counted, and tokens within 25% of what the run then uses."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from flows.cli import estimate as estimate_cli
from flows.cli import main
from flows.engine.cost_estimate import TokenCounter, estimate_recipe, fit_length, read_history
from flows.engine.token_bound import chat_tokens
from flows.recipe import load_recipe
from tests.helpers import write_jsonl
from tests.unique_stub import CountingChatStub

ROOT = Path(__file__).resolve().parents[1]
PROMPTS = [f"Give {k} short tips for keeping a small garden healthy through a dry summer. The garden has "
           "tomatoes, beans and a few herbs in raised beds, the soil is sandy, and water is limited to one "
           f"can a day. Say which tip matters most and why, in plain words for a beginner (case {k})."
           for k in range(1, 7)]  # fmt: skip


def estimate(*argv: str) -> int:
    """`rlaif estimate ...` through its own module (the lead registers it in flows/cli/__init__.py)."""
    parser = argparse.ArgumentParser()
    estimate_cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["estimate", *argv])
    return args.fn(args)


def stub_recipe(tmp_path: Path, base_url: str, price: bool = False) -> Path:
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    pairs = write_jsonl(tmp_path / "gold.jsonl", [{"prompt": "What is 2+2?", "chosen": "4.", "rejected": "5."},
                                                  {"prompt": "Capital of France?", "chosen": "Paris.",
                                                   "rejected": "Lyon."}])  # fmt: skip
    path = tmp_path / "r.yaml"
    path.write_text(f"""name: est
prompts: {{path: {prompts}}}
policy:
  endpoints: [{{base_url: {base_url}, model: stub-policy}}]
  {"price: {input: 0.5, output: 2.0}" if price else ""}
sampling: {{n: 3, max_tokens: 48}}
shard_size: 4
judges: [{{type: ultrafeedback, max_tokens: 160}}, {{type: pairwise}}]
critique: {{constitution: {ROOT / "constitutions/harmless.yaml"}, mode: both, max_tokens: 40}}
gate: {{pairs: {pairs}, judge: pairwise}}
binarize: {{test_fraction: 0.0}}
""")
    return path


def test_estimate_sends_nothing_counts_every_request_and_lands_within_25_percent(tmp_path, capsys):
    out = tmp_path / "out"
    with CountingChatStub(mode="hash", min_words=8, max_words=30) as stub:
        recipe = stub_recipe(tmp_path, stub.base_url, price=True)
        assert estimate(str(recipe), "--out", str(out), "--json", "-") == 0
        assert stub.received == 0  # the estimate sent nothing
        before = json.loads(capsys.readouterr().out)  # --json -: only the JSON on stdout
        assert not out.exists()  # and wrote nothing into the run folder
        rows = {s["stage"]: s for s in before["stages"]}
        # n = 3 per prompt: ultrafeedback 4 aspects; pairwise (UltraFeedback ranks) the one pair binarization
        # emits x 2 orders; critique 3 x (critique + revision) + 1 labelled pair x 2 orders; the gate: 2
        # pairs x 2 orders, once
        per_prompt = {"generate": 3, "judge:ultrafeedback": 4, "judge:pairwise": 2, "critique": 8}
        assert {s: r["requests"] for s, r in rows.items()} == {
            **{s: k * len(PROMPTS) for s, k in per_prompt.items()},
            "gate": 4,
        }
        assert before["total"]["requests"] == sum(r["requests"] for r in rows.values())
        assert set(before["total"]) >= {"requests", "prompt_tokens", "completion_tokens", "usd"}
        assert before["history"] is None and rows["generate"]["completion_tokens"] == 3 * 48 * len(PROMPTS)
        assert rows["generate"]["counted_by"] == "characters/4"  # no local tokenizer behind an endpoint
        assert before["total"]["usd"] == pytest.approx(
            sum(r["usd"] for r in rows.values()), abs=1e-5) and before["total"]["usd"] > 0  # fmt: skip

        assert main(["run", str(recipe), "--out", str(out)]) == 0
        printed = capsys.readouterr().out
        assert "rlaif: estimate: 6 prompts -> 106 requests" in printed and "no budget" in printed
        sent = stub.received
        assert estimate(str(recipe), "--out", str(out), "--json", str(tmp_path / "after.json")) == 0
        assert stub.received == sent  # again nothing
    table = capsys.readouterr().out
    assert "observed mean" in table and "total" in table and "0 requests sent" in table
    after = json.loads((tmp_path / "after.json").read_text())
    assert after["history"]["answers"] == sent - 4  # the gate's answers are not journalled
    usage = json.loads((out / "summary.json").read_text())["usage"]
    est = {s["stage"]: s for s in after["stages"]}
    assert "gate" not in est  # gate.json holds its figures now: not sent again
    for stage, u in usage.items():
        e = est[stage]
        assert e["requests"] == u["requests"], stage
        for field in ("prompt_tokens", "completion_tokens"):
            ratio = e[field] / u[field]
            assert 0.75 <= ratio <= 1.25, f"{stage} {field}: estimate {e[field]:,} vs run {u[field]:,}"
        assert e["completion_tokens_max"] >= u["completion_tokens"]  # max_tokens is the upper figure
    total = sum(u["prompt_tokens"] + u["completion_tokens"] for u in usage.values())
    assert 0.75 <= (after["total"]["prompt_tokens"] + after["total"]["completion_tokens"]) / total <= 1.25


def test_a_local_model_is_counted_by_its_tokenizer_exactly(tmp_path, tiny_model):
    """The policy's own chat template counts the prompts (what vLLM reports), never a hub download."""
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    path = tmp_path / "local.yaml"
    path.write_text(f"""prompts: {{path: {prompts}}}
policy: {{model: {tiny_model}, endpoints: local}}
sampling: {{n: 2, max_tokens: 32}}
judges: [{{type: pairwise, max_tokens: 16}}]
""")
    est = estimate_recipe(load_recipe(path), tmp_path / "out", sample=4)
    gen = next(s for s in est.stages if s.stage == "generate")
    assert gen.counted_by == f"tokenizer ({tiny_model.name})" and est.sample == 4 and est.prompts == 6
    tok = TokenCounter(str(tiny_model)).tok
    exact = [chat_tokens(tok, [{"role": "user", "content": p}]) for p in PROMPTS]
    assert min(exact) * 12 <= gen.prompt_tokens <= max(exact) * 12  # 4 sampled, scaled to 6 prompts x 2
    full = estimate_recipe(load_recipe(path), tmp_path / "out", sample=64)
    assert next(s for s in full.stages if s.stage == "generate").prompt_tokens == 2 * sum(exact)
    assert "at most" in full.line() and "characters/4" not in full.line() and full.total.usd is None


def test_placeholder_lengths_meet_the_observed_mean_and_history_reads_journals(tmp_path):
    fit = fit_length([1, 1, 100, 100], 30.0)  # two 1-token labels and two long answers average 30
    assert fit(1) == 1 and fit(100) == 59 and (1 + 1 + 59 + 59) / 4 == 30
    assert fit_length([10, 10], 50.0)(10) == 10  # never above max_tokens
    shard = tmp_path / "shards" / "00000-abc"
    shard.mkdir(parents=True)
    (shard / "journal.jsonl").write_text(
        '{"k":"a","s":"generate","t":"x","f":"stop","pt":5,"ct":10}\n'
        '{"k":"b","s":"generate","t":"y","f":"stop","pt":5,"ct":20}\n'
        '{"k":"c","s":"judge:pairwise","rejected":400,"error":"too long"}\n{"k":"d","s":"gen'
    )  # torn tail
    h = read_history(tmp_path)
    assert h is not None and h.means == {"generate": 15.0} and h.answers == 2
    assert read_history(tmp_path / "nothing") is None
