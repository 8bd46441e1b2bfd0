"""The judge contract: a judge type defined only in this file runs generate -> judge -> build -> card ->
judge-eval (the guard that no code outside judges/ branches on a judge's type: tests/test_judge_guard.py)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Literal

from datasets import load_from_disk

from flows.evals.judge_eval import LabelledPair, evaluate
from flows.pipeline import run_pipeline
from flows.recipe import load_recipe
from judges.contract import Completion, Judge, JudgeConfig, Judgement, Prompt
from judges.registry import make_judge, register

ROOT = Path(__file__).resolve().parents[1]


class LengthConfig(JudgeConfig):
    type: Literal["length"] = "length"
    per_char: float = 1.0


@register
class LengthJudge(Judge):
    """Prefers the longer answer: score = characters x per_char. Local, no requests."""

    type = "length"
    config_class = LengthConfig
    uses_endpoint = False

    def requests_per_prompt(self, n: int) -> int:
        return 0

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        return Judgement(scores=[len(c.response) * self.config.per_char for c in completions])


def test_a_judge_defined_in_one_file_runs_the_whole_pipeline(vllm_server, tmp_path):
    recipe_file = tmp_path / "r.yaml"
    recipe_file.write_text(
        f"name: length\nprompts:\n  limit: 6\npolicy:\n  port: {vllm_server.port}\n"
        "sampling:\n  n: 3\n  max_tokens: 40\n  temperature: 1.0\n"
        "judges:\n  - type: length\n    per_char: 0.5\nbinarize:\n  rule: all-pairs\n  test_fraction: 0.25\n"
        "lints:\n  allow_truncated_chosen: true\n"  # 40 tokens cut most answers: rank them all
    )
    recipe = load_recipe(recipe_file)
    out = tmp_path / "out"
    summary = run_pipeline(recipe, out)
    assert summary.stages["judge"].requests == 0  # scored locally
    pairs = load_from_disk(str(out / "binarized"))
    n = 0
    for split in ("train_prefs", "test_prefs"):
        for row in pairs[split]:
            chosen, rejected = row["chosen"][0]["content"], row["rejected"][0]["content"]
            assert len(chosen) > len(rejected), (chosen, rejected)  # a swap anywhere fails here
            assert row["score_chosen"] == len(chosen) * 0.5 and row["judge"] == "length"
            n += 1
    assert n >= 6
    uf = load_from_disk(str(out / "ultrafeedback"))
    for row in uf:
        for c in row["completions"]:
            assert c["scores"]["length"] == len(c["response"]) * 0.5
    card = (out / "README.md").read_text()
    assert "| length | length |" in card and "scores, 0 missing" in card
    assert summary.build.judges["length"]["requests"] == 0


def test_judge_eval_runs_any_registered_judge():
    pairs = [
        LabelledPair(prompt="q1", chosen="a long answer", rejected="short"),
        LabelledPair(prompt="q2", chosen="tiny", rejected="a much longer answer"),
        LabelledPair(prompt="q3", chosen="same", rejected="size"),
        LabelledPair(prompt="q4", chosen="longer one", rejected="no"),
    ]
    res = asyncio.run(evaluate(make_judge(LengthConfig()), pairs))
    # length wins q1, q4; loses q2; q3 is a tie in both orders (half a point)
    assert res.n == 4 and res.accuracy == (1 + 0 + 0.5 + 1) / 4
    assert res.position_consistency == 1.0 and res.tie_rate == 1 / 4  # q3: tie in both orders agrees
    assert res.p_first == 0.5  # order-blind: of 6 decided single-order verdicts, 3 went to the first shown
    assert res.judge == "length"


def test_two_judges_of_one_type_keep_their_own_figures(vllm_server, tmp_path):
    """Bug G: the second UltraFeedback judge's card figures are its own (here: a garbage judge)."""
    from tests.stubs import always_answers

    with always_answers("no idea") as stub:
        recipe_file = tmp_path / "r.yaml"
        recipe_file.write_text(
            f"prompts:\n  limit: 3\npolicy:\n  port: {vllm_server.port}\nsampling:\n  n: 2\n  max_tokens: 24\n"
            "judges:\n  - type: ultrafeedback\n    name: real\n    aspects: [helpfulness]\n    max_tokens: 128\n"
            "  - type: ultrafeedback\n    name: garbage\n    aspects: [honesty, helpfulness]\n"
            f"    judge:\n      endpoints:\n        - base_url: {stub.base_url}\n          model: stub\n"
        )
        summary = run_pipeline(load_recipe(recipe_file), tmp_path / "out")
    real, garbage = summary.build.judges["real"], summary.build.judges["garbage"]
    assert (real["requests"], real["ratings"]) == (3, 6)
    assert (garbage["requests"], garbage["ratings"], garbage["null_ratings"]) == (6, 12, 12)
    assert garbage["model"] == "stub" and real["model"] != "stub"
    card = (tmp_path / "out" / "README.md").read_text()
    assert "| garbage | ultrafeedback | stub | 6 | 12 | 12 ratings, 12 null |" in card
