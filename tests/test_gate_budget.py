"""The judge gate (exit 3 before any generation request), prices and cost per stage, and a budget
that stops a run (exit 4) which a re-run without it finishes without re-sending anything."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

import tests.length_judge  # noqa: F401 - registers the `chars` judge
from flows.cli import main
from serving.price import Price
from tests.helpers import journal_lines, journal_records, write_jsonl
from tests.stubs import FaultProxy

PROMPTS = [{"prompt": "Name a fruit that is yellow."}, {"prompt": "What is 3 times 4?"},
           {"prompt": "Give a one-line tip for sleeping well."}, {"prompt": "Say hello in French."}]  # fmt: skip


def gold(tmp_path: Path, longer_is_better: bool) -> Path:
    pairs = [("What is 2+2?", "4", "The answer to two plus two is five, I believe."),
             ("Capital of France?", "Paris.", "It is Lyon, the largest city in the south of France."),
             ("Is ice cold?", "Yes.", "No, ice is usually warm to the touch in winter.")]  # fmt: skip
    rows = [{"prompt": p, "chosen": b, "rejected": a} if longer_is_better else
            {"prompt": p, "chosen": a, "rejected": b} for p, a, b in pairs]  # fmt: skip
    return write_jsonl(tmp_path / f"gold-{longer_is_better}.jsonl", rows)


def gated_recipe(tmp_path: Path, base_url: str, model: str, pairs: Path) -> Path:
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS[:2])
    p = tmp_path / "gated.yaml"
    p.write_text(f"""name: gated
prompts: {{path: {data}}}
policy:
  endpoints: [{{base_url: {base_url}, model: {model}}}]
sampling: {{n: 2, max_tokens: 12}}
judges: [{{type: chars}}]
gate: {{pairs: {pairs}, min_accuracy: 0.9}}
binarize: {{test_fraction: 0.0}}
""")
    return p


def test_failing_gate_exits_3_before_any_generation(vllm_server, tmp_path, capsys):
    out = tmp_path / "out"
    with FaultProxy(vllm_server.base_url) as proxy:
        recipe = gated_recipe(tmp_path, proxy.base_url, vllm_server.model_name, gold(tmp_path, False))
        assert main(["run", str(recipe), "--out", str(out)]) == 3
        assert proxy.calls == 0  # not one generation request
        err = capsys.readouterr().err.strip()
        assert err.count("\n") == 0 and "gate failed" in err and "accuracy 0.00 < 0.90" in err
        summary = json.loads((out / "summary.json").read_text())
        assert summary["gate"]["passed"] is False and summary["stopped"] == "gate failed"
        assert summary["gate"]["figures"]["accuracy"] == 0.0 and summary["gate"]["figures"]["n"] == 3
        assert not (out / "binarized").exists() and not (out / "build.json").exists()

        # --no-gate: the run goes on, and the failed gate is still reported
        assert main(["run", str(recipe), "--out", str(out), "--no-gate"]) == 0
        assert proxy.calls == 4  # generation only: 2 prompts x 2 samples, one request each
        summary = json.loads((out / "summary.json").read_text())
        assert summary["gate"]["passed"] is False and summary["gate"]["overridden"] is True
        assert "## Judge gate" in (out / "README.md").read_text()


def test_passing_gate_runs_normally(vllm_server, tmp_path, capsys):
    out = tmp_path / "out"
    recipe = gated_recipe(tmp_path, vllm_server.base_url, vllm_server.model_name, gold(tmp_path, True))
    assert main(["run", str(recipe), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["gate"]["passed"] is True and summary["gate"]["figures"]["accuracy"] == 1.0
    assert summary["stages"]["generate"]["requests"] == 4 and (out / "build.json").exists()
    assert "judge gate" in capsys.readouterr().out


def priced_recipe(tmp_path: Path, port: int, budget: str = "") -> Path:
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    p = tmp_path / f"priced{'-budget' if budget else ''}.yaml"
    p.write_text(f"""name: priced
prompts: {{path: {data}}}
policy:
  port: {port}
  price: {{input: 0.5, cached_input: 0.25, output: 2.0}}
sampling: {{n: 2, max_tokens: 16}}
shard_size: 2
judges:
  - {{type: pairwise, max_tokens: 24}}
binarize: {{test_fraction: 0.0}}
{budget}""")
    return p


@pytest.fixture(scope="module")
def full_run(vllm_server, tmp_path_factory) -> tuple[Path, dict]:
    tmp = tmp_path_factory.mktemp("priced")
    out = tmp / "out"
    assert main(["run", str(priced_recipe(tmp, vllm_server.port)), "--out", str(out)]) == 0
    return out, json.loads((out / "summary.json").read_text())


def test_prices_give_cost_per_stage(full_run, capsys):
    out, summary = full_run
    price = Price(input=0.5, cached_input=0.25, output=2.0)
    for stage in ("generate", "judge:pairwise"):
        u = summary["usage"][stage]
        assert u["prompt_tokens"] > 0 and u["completion_tokens"] > 0 and u["requests"] > 0
        want = price.cost(u["prompt_tokens"], u["cached_prompt_tokens"], u["completion_tokens"])
        assert u["cost_usd"] == pytest.approx(want, abs=1e-6)
        assert u["cost_usd"] == pytest.approx(
            (0.5 * (u["prompt_tokens"] - u["cached_prompt_tokens"]) + 0.25 * u["cached_prompt_tokens"]
             + 2.0 * u["completion_tokens"]) / 1e6, abs=1e-6)  # fmt: skip
    # vLLM reports its prefix-cache hits per request: the pairwise judge repeats its instructions
    assert summary["usage"]["judge:pairwise"]["cached_prompt_tokens"] > 0
    assert "$" in (out / "README.md").read_text()


def test_budget_stops_cleanly_and_a_rerun_finishes_without_resending(vllm_server, full_run, tmp_path, capsys):
    _, summary = full_run
    total = sum(u["new_prompt_tokens"] + u["new_completion_tokens"] for u in summary["usage"].values())
    requests = sum(u["requests"] for u in summary["usage"].values())
    out = tmp_path / "out"
    recipe = priced_recipe(tmp_path, vllm_server.port, f"budget: {{tokens: {total // 2}}}\n")
    assert main(["run", str(recipe), "--out", str(out)]) == 4
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "budget reached" in err and f"{total // 2:,} tokens" in err
    assert not (out / "build.json").exists()
    done = journal_records(out)
    assert 0 < len(done) < requests
    # the cap holds on what the server reported for every request it answered (all journalled), and
    # the run used its budget: it stops when the next request's worst case no longer fits, not at the
    # first request that does not fit next to those in flight (that stopped at a few percent)
    used = sum(r["pt"] + r["ct"] for r in done)
    sent = int(err.split("this run sent ")[1].split(" tokens")[0].replace(",", ""))
    assert sent == used <= total // 2
    worst = 2 * max(r["pt"] for r in done) + 64  # a generous worst case for the request that did not fit
    assert used >= total // 2 - worst
    # without the budget: only what is missing is sent, nothing twice
    plain = priced_recipe(tmp_path, vllm_server.port)
    assert main(["run", str(plain), "--out", str(out)]) == 0
    again = json.loads((out / "summary.json").read_text())
    sent = sum(u["requests"] for u in again["usage"].values())
    assert sent == requests - len(done)
    keys = [r["k"] for r in journal_lines(out)]  # raw lines: a key written twice is not deduped away
    assert len(keys) == len(set(keys)) == requests
