"""Judges map what they were shown back to the right completion: UltraFeedback's shuffled display order,
pairwise's two orders, and the scores and verdicts a built row carries."""

from __future__ import annotations

import asyncio
import json
import re

import pytest

from flows.dataset.rows import PromptResult, prompt_row
from judges.contract import Completion, Judgement, Prompt, SampleParams, VerdictRow, as_completions, as_prompt
from judges.pairwise import PairwiseConfig, PairwiseJudge
from judges.ultrafeedback import ASPECTS, UltraFeedbackConfig, UltraFeedbackJudge
from serving.endpoint import ChatResult, Choice

QUALITY = re.compile(r"quality=(\d)")


class RatesByText:
    """A scripted client (no model): rates each shown answer by the `quality=N` written in it, and
    answers a pairwise question for whichever shown answer has the higher quality."""

    def __init__(self) -> None:
        self.shown: list[list[int]] = []

    async def chat(self, messages, **kw) -> ChatResult:  # noqa: ANN001, ANN003
        text = messages[-1]["content"]
        if "Answer 1:" in text:  # UltraFeedback frame: answers in the shown order
            qs = [int(q) for q in QUALITY.findall(text.split("The user asked:")[1])]
            self.shown.append(qs)
            body = {"ratings": [{"rating": q, "rationale": ""} for q in qs]}
        else:  # pairwise: [A] then [B]
            a, b = (int(q) for q in QUALITY.findall(text)[-2:])
            body = {"verdict": "A" if a > b else "B" if b > a else "tie", "rationale": ""}
        return ChatResult(choices=[Choice(text=json.dumps(body))])


RESPONSES = [f"answer {k} quality={q}" for k, q in enumerate([2, 5, 1, 4, 3])]


def ask(prompt_id: str, text: str) -> Prompt:
    return Prompt(prompt_id=prompt_id, prompt=text, messages=[{"role": "user", "content": text}])


def test_ultrafeedback_shuffles_per_prompt_and_maps_ratings_back():
    shown = []
    for prompt_id in ["p-0", "p-1", "q-17", "xyz"]:
        client = RatesByText()
        judge = UltraFeedbackJudge(UltraFeedbackConfig(), client)
        j = asyncio.run(judge.judge(ask(prompt_id, "question"), as_completions(RESPONSES)))
        # each completion gets its own quality back on every aspect, whatever order it was shown in
        assert j.scores == [2.0, 5.0, 1.0, 4.0, 3.0]
        for ann, q in zip(j.annotations, [2, 5, 1, 4, 3]):
            assert {a: v["rating"] for a, v in ann.items()} == dict.fromkeys(ASPECTS, q)
        assert len(client.shown) == len(ASPECTS)
        # one shuffled order per prompt, the same for every aspect: the requests share their prefix
        assert all(order == client.shown[0] for order in client.shown)
        shown.append(client.shown[0])
    assert any(order != [2, 5, 1, 4, 3] for order in shown), "never shuffled"
    assert len({tuple(o) for o in shown}) > 1, "every prompt shown in the same order"


@pytest.mark.parametrize("seed", range(4))
def test_ultrafeedback_prefer_shows_exactly_the_given_order(seed):
    """Every aspect, every seed: a seeded shuffle here (bug E) turns some aspects' two orders into one."""
    client = RatesByText()
    judge = UltraFeedbackJudge(UltraFeedbackConfig(seed=seed), client)
    first = asyncio.run(judge.prefer(as_prompt("q"), "x quality=2", "y quality=4"))
    second = asyncio.run(judge.prefer(as_prompt("q"), "y quality=4", "x quality=2"))
    assert client.shown == [[2, 4]] * len(ASPECTS) + [[4, 2]] * len(ASPECTS)
    assert first.winner == "y" and second.winner == "x"  # x = shown first


def test_pairwise_two_orders_agree_on_the_better_completion():
    judge = PairwiseJudge(PairwiseConfig(logprobs=False), RatesByText())
    j = asyncio.run(judge.judge(ask("p", "question"), as_completions(RESPONSES[:3])))  # qualities 2, 5, 1
    winners = {(v.i, v.j): v.winner for v in j.verdicts}
    assert winners == {(0, 1): "y", (0, 2): "x", (1, 2): "x"}
    assert all(v.consistent for v in j.verdicts)
    assert j.scores == [0.5, 1.0, 0.0] and j.requests == 6


def test_row_maps_judgements_to_sample_indices():
    """Judgement lists follow the completions' order; rows name completions by sample_index."""
    params = SampleParams(temperature=1.0, top_p=1.0, max_tokens=8, seed=None)
    comps = [Completion(sample_index=s, model="m", response=f"r{s}", sampling=params, finish_reason="stop",
                        completion_tokens=1) for s in (3, 0, 2)]  # fmt: skip
    judged = {
        "uf": Judgement(scores=[1.0, 5.0, 3.0], annotations=[{"a": {"rating": k}} for k in (1, 5, 3)]),
        "pw": Judgement(scores=[0.0, 1.0, 0.5], verdicts=[VerdictRow(i=0, j=1, winner="y", consistent=True)]),
    }
    result = PromptResult(prompt=ask("p", "q"), completions=comps, judged=judged)
    row = prompt_row(result, "uf", ["uf", "pw"], [])
    by_index = {c["sample_index"]: c for c in row["completions"]}
    assert by_index[0]["scores"] == {"uf": 5.0, "pw": 1.0} and by_index[0]["fine_grained_score"] == 5.0
    assert by_index[3]["annotations"] == {"a": {"rating": 1}}
    assert row["pairwise_verdicts"] == [{"judge": "pw", "i": 3, "j": 0, "winner": "y", "consistent": True,
                                         "p_x": None}]  # fmt: skip
