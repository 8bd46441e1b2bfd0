"""Judges: UltraFeedback ratings on the real server, pairwise swap logic and garbage answers on stubs."""

from __future__ import annotations

import asyncio
import json

import pytest

from flows.evals.judge_eval import evaluate, load_pairs
from judges.contract import Prompt, as_completions
from judges.pairwise import PairwiseConfig, PairwiseJudge
from judges.ultrafeedback import ASPECTS, UltraFeedbackConfig, UltraFeedbackJudge
from serving.client import LLMClient
from serving.endpoint import ClientConfig, Endpoint
from serving.errors import DataError
from tests.stubs import always_answers

PROMPTS = {
    "p-france": ("What is the capital of France?", ["Paris is the capital of France.", "Berlin.",
                                                     "I like turtles."]),
    "p-sum": ("What is 12 + 30?", ["12 + 30 = 42.", "It is 52.", "Numbers are fun to add!"]),
}  # fmt: skip


def ask(prompt_id: str, text: str) -> Prompt:
    return Prompt(prompt_id=prompt_id, prompt=text, messages=[{"role": "user", "content": text}])


def _run(coro_fn, endpoint: Endpoint):
    async def go():
        client = LLMClient([endpoint], ClientConfig(max_retries=1, backoff_base_s=0.01))
        try:
            return await coro_fn(client), client.counters
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_ultrafeedback_structured_ratings_on_real_server(policy_endpoint):
    async def go(client):
        judge = UltraFeedbackJudge(UltraFeedbackConfig(max_tokens=512), client)  # JSON for 3 answers
        return await asyncio.gather(
            *(judge.judge(ask(pid, p), as_completions(rs)) for pid, (p, rs) in PROMPTS.items())
        )

    results, counters = _run(go, policy_endpoint)
    assert counters.requests == 2 * len(ASPECTS)  # one request per (prompt, aspect)
    for res in results:
        assert res.parse_failures == 0 and res.requests == len(ASPECTS)
        assert len(res.scores) == len(res.annotations) == 3
        for score, ann in zip(res.scores, res.annotations):
            assert set(ann) == set(ASPECTS)
            assert all(a["rating"] in (1, 2, 3, 4, 5) and a["error"] is None for a in ann.values())
            assert score == pytest.approx(sum(a["rating"] for a in ann.values()) / 4)


def test_pairwise_soft_preference_from_logprobs_on_real_server(policy_endpoint):
    async def go(client):
        return await PairwiseJudge(PairwiseConfig(), client).compare("What is 2 + 2?", "4", "5")

    v, _ = _run(go, policy_endpoint)
    assert v.forward.verdict in ("A", "B", "tie") and v.backward.verdict in ("A", "B", "tie")
    assert v.p_x is not None and 0.0 <= v.p_x <= 1.0


def test_pairwise_judge_that_always_answers_a_is_all_ties():
    with always_answers('{"verdict": "A", "rationale": "first is best"}') as stub:
        ep = Endpoint(base_url=stub.base_url, model="stub")

        async def go(client):
            judge = PairwiseJudge(PairwiseConfig(logprobs=False), client)
            return await asyncio.gather(*(judge.compare("q", f"x{i}", f"y{i}") for i in range(5)))

        verdicts, _ = _run(go, ep)
        assert all(v.winner == "tie" and not v.consistent for v in verdicts)
        pairs = [type("P", (), {"prompt": "q", "chosen": "good", "rejected": "bad"})() for _ in range(6)]
        report, _ = _run(lambda c: evaluate(PairwiseJudge(PairwiseConfig(logprobs=False), c), pairs), ep)
    assert report.position_consistency == 0.0
    assert report.tie_rate == 1.0
    assert report.accuracy == 0.5
    assert report.p_first == 1.0


@pytest.mark.parametrize(
    ("answer", "reason"),
    [
        ("this is not json at all", "unparseable judge output"),
        ('{"ratings": [{"rating": 9, "rationale": "x"}, {"rating": 2, "rationale": "y"}]}', "out of range"),
        ('{"ratings": [{"rating": 4, "rationale": "only one"}]}', "1 ratings for 2 answers"),
    ],
)
def test_garbage_judge_answers_become_null_with_reason(answer, reason):
    with always_answers(answer) as stub:
        ep = Endpoint(base_url=stub.base_url, model="stub")
        res, _ = _run(
            lambda c: UltraFeedbackJudge(UltraFeedbackConfig(aspects=["helpfulness"]), c).judge(
                ask("p", "q"), as_completions(["a", "b"])
            ),
            ep,
        )
    ratings = [a["helpfulness"] for a in res.annotations]
    nulls = [r for r in ratings if r["rating"] is None]
    assert nulls and all(reason in r["error"] for r in nulls)
    assert res.parse_failures == len(nulls)


def test_pairs_file_errors_name_the_line(tmp_path):
    f = tmp_path / "pairs.jsonl"
    f.write_text(json.dumps({"prompt": "q", "chosen": "a", "rejected": "b"}) + "\n"
                 + json.dumps({"prompt": "q", "chosen": "a"}) + "\n")  # fmt: skip
    with pytest.raises(DataError, match=r"pairs.jsonl:2: missing or non-text field\(s\) \['rejected'\]"):
        load_pairs(f)
    f.write_text("{not json\n")
    with pytest.raises(DataError, match="pairs.jsonl:1: not valid JSON"):
        load_pairs(f)
