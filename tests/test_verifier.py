"""The verifier judge (judges/verifier.py): checks that pass and fail what they should, its recipe end to
end on the bundled model (pairs ranked by verified answers, reasons in the rows, a card row), and
judge-eval on it."""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

import pytest
from datasets import load_from_disk
from hypothesis import given, settings
from hypothesis import strategies as st

from flows.evals.judge_eval import evaluate, load_pairs
from flows.pipeline import run_pipeline
from flows.recipe import load_recipe
from judges.contract import as_completions, as_prompt
from judges.registry import make_judge, parse_judge_config
from judges.verifier import final_answer, same_math, stated_answer

ROOT = Path(__file__).resolve().parents[1]


def verify(config: dict, answers: list[str], reference: str | None) -> list[tuple[float | None, str | None]]:
    judge = make_judge(parse_judge_config({"type": "verifier", **config}))
    prompt = as_prompt("q", {"answer": reference} if reference is not None else {})
    j = asyncio.run(judge.judge(prompt, as_completions(answers)))
    return list(zip(j.scores, j.notes or []))


@settings(derandomize=True, max_examples=200, deadline=None)
@given(st.integers(-(10**6), 10**6), st.integers(1, 1000))
def test_math_check_passes_the_reference_and_fails_any_other_number(n, delta):
    right = f"Some working first, 3 + 4 = 7. The answer is {n:,}."
    wrong = f"Some working first. The answer is {n + delta}."
    (ok, why_ok), (bad, why_bad) = verify({"check": "math"}, [right, wrong], str(n))
    assert ok == 1.0 and bad == 0.0, (why_ok, why_bad)
    assert "!=" in why_bad and str(n) in why_bad


def test_math_check_reads_boxed_fractions_and_expressions():
    assert same_math("3/4", "0.75") and same_math("$20", "20") and same_math("2x+2", "2(x+1)")
    assert not same_math("2x+1", "2x + 2") and not same_math('__import__("os")', "1")
    assert final_answer("so \\boxed{12} is it") == "12" and final_answer("#### 1,200") == "1,200"
    assert stated_answer("2x + 2") is None  # a reference without a marker is taken whole


def test_each_check_and_an_unchecked_prompt():
    assert verify({"check": "exact"}, ["Paris", "paris."], "Paris")[0][0] == 1.0
    assert [s for s, _ in verify({"check": "exact"}, ["Paris", "paris."], "Paris")] == [1.0, 0.0]
    assert [s for s, _ in verify({"check": "normalized"}, ["  paris. ", "Lyon"], "Paris")] == [1.0, 0.0]
    regex = {"check": "regex", "pattern": r"^\d+$", "reference": None}
    assert [s for s, _ in verify(regex, ["42", "forty-two"], None)] == [1.0, 0.0]
    ((score, why),) = verify({"check": "math"}, ["The answer is 5."], "")
    assert score is None and "no reference" in why  # counted as unscored, never a pass or a fail


def test_callable_check(tmp_path, monkeypatch):
    (tmp_path / "my_checks.py").write_text(
        "def longer_than_ref(response, reference, prompt):\n"
        "    return (len(response) > len(reference), f'{len(response)} chars')\n"
    )
    monkeypatch.syspath_prepend(str(tmp_path))
    got = verify({"check": "callable", "function": "my_checks:longer_than_ref"}, ["abcdef", "ab"], "abc")
    assert got == [(1.0, "6 chars"), (0.0, "2 chars")]
    sys.modules.pop("my_checks", None)


def test_bad_verifier_configs_are_refused_with_the_field():
    for bad, words in (({"check": "regex"}, "pattern"), ({"check": "regex", "pattern": "("}, "regular"),
                       ({"check": "callable"}, "module:function"), ({"check": "math", "reference": None}, "reference")):  # fmt: skip
        with pytest.raises(ValueError, match=words):
            parse_judge_config({"type": "verifier", **bad})


def test_judge_eval_runs_on_the_verifier():
    judge = make_judge(parse_judge_config({"type": "verifier"}))
    res = asyncio.run(evaluate(judge, load_pairs(ROOT / "data/gold/math_pairs.jsonl")))
    assert res.n == 8 and res.accuracy == 1.0 and res.consistency == 1.0 and res.parse_failures == 0


def test_verifier_demo_recipe_end_to_end(vllm_server, tmp_path, monkeypatch):
    monkeypatch.chdir(ROOT)  # the recipe names data/math/word_problems.jsonl from the repository root
    recipe = load_recipe(ROOT / "recipes/verifier-demo.yaml")
    recipe.policy.port = vllm_server.port
    out = tmp_path / "out"
    summary = run_pipeline(recipe, out, ROOT / "recipes")
    assert summary.stages["judge"].requests == 0  # checked locally, no judge request
    refs = {json.loads(line)["prompt"]: json.loads(line)["answer"]
            for line in (ROOT / "data/math/word_problems.jsonl").read_text().splitlines()}  # fmt: skip
    uf = load_from_disk(str(out / "ultrafeedback"))
    passed = 0
    for row in uf:
        for c in row["completions"]:  # every completion carries its score and the reason for it
            answer = final_answer(c["response"])
            expect = 1.0 if answer is not None and same_math(answer, refs[row["prompt"]]) else 0.0
            assert c["scores"]["verifier"] == expect and c["notes"]["verifier"], c
            passed += int(expect)
    pairs = load_from_disk(str(out / "binarized"))
    n = 0
    for split in ("train_prefs", "test_prefs"):
        for p in pairs[split]:
            assert p["judge"] == "verifier" and (p["score_chosen"], p["score_rejected"]) == (1.0, 0.0)
            chosen = final_answer(p["chosen"][0]["content"])
            assert chosen is not None and same_math(chosen, refs[p["prompt"][-1]["content"]])
            n += 1
    assert passed >= 1 and n >= 1, f"{passed} verified answers, {n} pairs"
    card = (out / "README.md").read_text()
    assert f"{passed} of {len(uf) * recipe.sampling.n} completions pass `math`" in card
