"""judge-eval figures with scripted judges (hand-computed values), the bundled gold pairs, the CLI's table
and --json, and the constitution judge (`prefer`) against a stub that answers with logprobs. No vLLM."""

from __future__ import annotations

import asyncio
import json
import math
import re
from collections.abc import Callable
from pathlib import Path

import pytest

import tests.length_judge  # noqa: F401 - registers the `chars` judge
from flows.cli import main
from flows.evals.judge_eval import JudgeEval, LabelledPair, bootstrap_ci, evaluate, load_pairs
from judges.constitution_judge import ConstitutionConfig, ConstitutionJudge
from judges.contract import Completion, Judge, JudgeConfig, Judgement, Preference, Prompt, as_prompt
from serving.errors import DataError
from tests.helpers import write_jsonl
from tests.stubs import StubServer

ROOT = Path(__file__).resolve().parents[1]
GOLD = ROOT / "data" / "gold" / "pairs.jsonl"
Pick = Callable[[str, str, str], Preference]


class Scripted(Judge):
    """Answers each shown order with whatever `pick(prompt, first, second)` returns."""

    type = "scripted"
    uses_endpoint = False

    def __init__(self, pick: Pick) -> None:
        super().__init__(JudgeConfig(type="scripted"))
        self.pick = pick

    def requests_per_prompt(self, n: int) -> int:
        return 0

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        raise NotImplementedError

    async def prefer(self, prompt: Prompt, first: str, second: str) -> Preference:
        return self.pick(prompt.prompt, first, second)


def run(pick: Pick, pairs: list[LabelledPair], **kw: int) -> JudgeEval:
    return asyncio.run(evaluate(Scripted(pick), pairs, **kw))


def always_first(prompt: str, first: str, second: str) -> Preference:
    return Preference(winner="x")  # x = the answer shown first


def by_length(prompt: str, first: str, second: str) -> Preference:
    a, b = len(first), len(second)
    return Preference(winner="x" if a > b else "y" if b > a else "tie")


def oracle(pairs: list[LabelledPair]) -> Pick:
    """Knows the human label of every pair: picks `chosen`, or says tie on a tie pair."""
    chosen = {p.prompt: p for p in pairs}

    def pick(prompt: str, first: str, second: str) -> Preference:
        p = chosen[prompt]
        return Preference(winner="tie" if p.tie else "x" if first == p.chosen else "y")

    return pick


PAIRS = [LabelledPair(prompt=f"q{i}", chosen=f"good answer {i}", rejected=f"bad {i}") for i in range(6)]


def test_a_judge_that_always_picks_the_first_shown_scores_a_coin_flip():
    res = run(always_first, PAIRS)
    assert (res.p_first, res.consistency, res.tie_rate, res.accuracy) == (1.0, 0.0, 1.0, 0.5)
    assert res.position_consistency == res.consistency  # the old name stays readable
    assert res.soft_accuracy is None and res.brier is None and res.categories == {}


def test_a_perfect_judge_on_the_gold_pairs():
    pairs = load_pairs(GOLD)
    res = run(oracle(pairs), pairs)
    assert res.n == 24 and res.accuracy == 1.0 and (res.ci_low, res.ci_high) == (1.0, 1.0)
    # the 3 tie pairs are called tie in both orders: consistent (it read 21/24 = 1 - tie rate)
    assert res.tie_rate == 3 / 24 and res.consistency == 1.0 and res.p_first == 0.5
    # 10 of the 21 preferred answers are the longer one; the 3 tie pairs have unequal lengths (0.5 each)
    assert res.length_baseline == pytest.approx(11.5 / 24)
    assert res.margin_over_length == pytest.approx(1 - 11.5 / 24)
    assert set(res.categories) == {"factual", "instruction-following", "math", "safety"}
    assert all(row.accuracy == 1.0 and row.n == 6 for row in res.categories.values())


def test_a_length_judge_is_exactly_the_length_baseline():
    pairs = load_pairs(GOLD)
    res = run(by_length, pairs)
    assert res.accuracy == res.length_baseline == pytest.approx(11.5 / 24)
    assert res.margin_over_length == 0.0
    assert res.length_baseline < 0.55  # the gold set does not reward length
    for row in res.categories.values():
        assert row.accuracy == row.length_baseline and row.margin_over_length == 0.0


def test_soft_accuracy_brier_p_first_and_parse_failures_by_hand():
    pairs = [
        LabelledPair(prompt="p1", chosen="longer", rejected="short"),
        LabelledPair(prompt="p2", chosen="short", rejected="longer"),
        LabelledPair(prompt="p3", chosen="same", rejected="size", tie=True),
        LabelledPair(prompt="p4", chosen="same", rejected="size"),
    ]
    script = {  # (prompt, shown first) -> preference
        ("p1", "longer"): Preference(winner="x", p_x=0.8),
        ("p1", "short"): Preference(winner="y", p_x=0.4),  # P(chosen) 0.6
        ("p2", "short"): Preference(winner="y", p_x=0.3),
        ("p2", "longer"): Preference(winner="x"),  # no probability
        ("p3", "same"): Preference(winner="tie", p_x=0.5),
        ("p3", "size"): Preference(winner="tie", p_x=0.5),
        ("p4", "same"): Preference(winner=None, parse_failures=1),
        ("p4", "size"): Preference(winner="x"),
    }
    res = run(lambda prompt, first, second: script[(prompt, first)], pairs)
    # verdicts: p1 chosen (1), p2 rejected (0), p3 tie on a tie pair (1), p4 failure -> tie (0.5)
    assert res.accuracy == (1 + 0 + 1 + 0.5) / 4
    # both orders agree on p1, p2 and p3 (tie, tie); p4's failure agrees with nothing
    assert (res.consistency, res.tie_rate) == (0.75, 0.5)
    # P(chosen): p1 (0.8 + 0.6) / 2 = 0.7, p2 0.3, p3 0.5 on a tie pair (target 0.5: soft 1, brier 0)
    assert res.soft_accuracy == pytest.approx((0.7 + 0.3 + 1.0) / 3)
    assert res.brier == pytest.approx((0.3**2 + 0.7**2 + 0.0) / 3)
    assert res.p_first == 3 / 5  # decided single-order verdicts: p1 F S, p2 S F, p4 - F
    assert res.parse_failures == 1
    # longer wins p1 (1), loses p2 (0), equal lengths: a tie, right on the tie pair p3 (1), half on p4
    assert res.length_baseline == (1 + 0 + 1 + 0.5) / 4 and res.margin_over_length == 0.0


def test_tie_pairs_a_judge_tie_is_right_a_pick_is_half_right():
    tie = [LabelledPair(prompt="q", chosen="one fine answer", rejected="another fine one", tie=True)]
    assert run(lambda *_: Preference(winner="tie"), tie).accuracy == 1.0
    assert run(oracle([tie[0].model_copy(update={"tie": False})]), tie).accuracy == 0.5
    assert run(lambda p, a, b: Preference(winner="x" if a == tie[0].rejected else "y"), tie).accuracy == 0.5
    assert run(always_first, tie).accuracy == 0.5  # orders that disagree are no tie call: a coin
    gold = load_pairs(GOLD)
    assert run(always_first, gold).accuracy == 0.5  # position bias earns nothing, tie pairs included


def test_one_row_per_category_pairs_without_one_share_a_row():
    pairs = [
        LabelledPair(prompt="m1", chosen="right", rejected="wrong answer", category="math"),
        LabelledPair(prompt="m2", chosen="right too", rejected="no", category="math"),
        LabelledPair(prompt="f1", chosen="Paris", rejected="Berlin, surely", category="factual"),
        LabelledPair(prompt="x1", chosen="yes indeed", rejected="no"),
    ]
    perfect = oracle(pairs)
    res = run(lambda p, a, b: perfect(p, a, b) if p.startswith("m") else Preference(winner="x"), pairs)
    assert list(res.categories) == ["(none)", "factual", "math"]
    math_row, fact_row, none_row = res.categories["math"], res.categories["factual"], res.categories["(none)"]
    assert (math_row.n, math_row.accuracy, math_row.consistency, math_row.p_first) == (2, 1.0, 1.0, 0.5)
    assert math_row.length_baseline == 0.5 and (math_row.ci_low, math_row.ci_high) == (1.0, 1.0)
    assert (fact_row.n, fact_row.accuracy, fact_row.consistency, fact_row.p_first) == (1, 0.5, 0.0, 1.0)
    assert fact_row.length_baseline == 0.0 and none_row.length_baseline == 1.0
    assert res.accuracy == (1 + 1 + 0.5 + 0.5) / 4 and res.p_first == 6 / 8


def test_bootstrap_interval_holds_the_accuracy_and_repeats_with_its_seed():
    pairs = load_pairs(GOLD)
    script = {p.prompt: i % 3 for i, p in enumerate(pairs)}  # right, wrong, order-biased in turn

    def mixed(prompt: str, first: str, second: str) -> Preference:
        kind, p = script[prompt], next(x for x in pairs if x.prompt == prompt)
        if kind == 2:
            return Preference(winner="x")
        right = (first == p.chosen) == (kind == 0)
        return Preference(winner="x" if right else "y")

    a, b, c = run(mixed, pairs), run(mixed, pairs), run(mixed, pairs, seed=1)
    assert a.ci_low < a.accuracy < a.ci_high and 0.0 <= a.ci_low and a.ci_high <= 1.0
    assert (a.ci_low, a.ci_high) == (b.ci_low, b.ci_high)
    assert c.ci_low < c.accuracy < c.ci_high  # another seed: another (here the same, on 24 pairs) interval
    scores = [(i * 7 % 3) / 2 for i in range(500)]
    assert bootstrap_ci(scores, 0, 1000) == bootstrap_ci(scores, 0, 1000) != bootstrap_ci(scores, 1, 1000)
    small = run(mixed, pairs, resamples=50)
    assert small.accuracy == a.accuracy and small.ci_low <= small.ci_high


def test_pairs_file_tie_and_category_are_checked(tmp_path):
    f = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "q", "chosen": "a", "rejected": "b", "tie": "yes"}])
    with pytest.raises(DataError, match=r"p.jsonl:1: `tie` must be true or false"):
        load_pairs(f)
    ok = {"prompt": "q", "chosen": "a", "rejected": "b"}
    write_jsonl(f, [ok, {**ok, "category": 3}])
    with pytest.raises(DataError, match=r"p.jsonl:2: `category` must be text"):
        load_pairs(f)


def test_cli_prints_a_table_and_writes_the_figures(tmp_path, capsys):
    out = tmp_path / "eval" / "figures.json"
    assert main(["judge-eval", "--pairs", str(GOLD), "--judge", "chars", "--json", str(out)]) == 0
    table = capsys.readouterr().out
    assert "accuracy [95% ci]" in table and "margin" in table and "brier" in table
    assert re.search(r"^all\s+24\s+0\.48 \[", table, re.M) and re.search(r"^safety\s+6 ", table, re.M)
    figures = json.loads(out.read_text())
    assert figures["judge"] == "chars" and figures["n"] == 24
    assert figures["accuracy"] == figures["length_baseline"] and figures["margin_over_length"] == 0.0
    assert set(figures["categories"]["math"]) >= {"n", "accuracy", "ci_low", "ci_high", "consistency",
                                                  "p_first", "length_baseline"}  # fmt: skip
    assert not list(out.parent.glob(".*.tmp"))  # written atomically
    args = ["judge-eval", "--pairs", str(GOLD), "--judge", "chars", "--limit", "4", "--json", "-"]
    assert main(args) == 0
    (line,) = capsys.readouterr().out.strip().splitlines()  # one JSON line, no table
    assert json.loads(line)["n"] == 4


def test_cli_errors_are_one_line(tmp_path, capsys):
    assert main(["judge-eval", "--pairs", str(GOLD), "--judge", "nope"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--judge nope" in err and "unknown judge type 'nope'" in err
    c = tmp_path / "c.yaml"
    assert main(["judge-eval", "--pairs", str(GOLD), "--judge", "chars", "--constitution", str(c)]) == 2
    # `--constitution` is an option of the constitution judge: a judge without it refuses it, saying why
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and f"--judge chars with --constitution {c}:" in err
    assert "errors.pydantic.dev" not in err and "not permitted" in err, err


CONSTITUTION = """name: test
principles:
  - id: right
    critique: c
    revision: r
    comparison: Which answer is correct?
  - id: kind
    critique: c
    revision: r
    comparison: Which answer is kinder?
"""


def choice_stub(logprobs: bool = True) -> StubServer:
    """Answers the letter of the response that contains "right"; P(that letter) = 0.8."""

    def reply(req: dict, n: int) -> tuple[int, dict, dict]:
        text = req["messages"][0]["content"]
        shown_a = text.split("(A)", 1)[1].split("(B)", 1)[0]
        letter, p_a = ("A", 0.8) if "right" in shown_a else ("B", 0.2)
        tops = [{"token": "A", "logprob": math.log(p_a)}, {"token": "B", "logprob": math.log(1 - p_a)}]
        lp = {"content": [{"token": letter, "logprob": math.log(max(p_a, 1 - p_a)), "top_logprobs": tops}]}
        choice = {"index": 0, "message": {"role": "assistant", "content": letter}, "finish_reason": "stop",
                  "logprobs": lp if logprobs else None}  # fmt: skip
        return 200, {"id": "s", "object": "chat.completion", "model": "stub", "choices": [choice]}, {}

    return StubServer(reply)


def test_cli_evaluates_the_constitution_judge(tmp_path, capsys):
    """`--constitution FILE` alone picks the constitution judge (one sampled principle per pair by
    default); the recipe's `critique:` section, named by `--judge constitution`, asks every principle."""
    const = tmp_path / "c.yaml"
    const.write_text(CONSTITUTION)
    rows = [{"prompt": "q1", "chosen": "the right one", "rejected": "no"},
            {"prompt": "q2", "chosen": "right", "rejected": "a wrong one"}]  # fmt: skip
    pairs = write_jsonl(tmp_path / "p.jsonl", rows)
    out = tmp_path / "e.json"
    with choice_stub() as stub:
        policy = f"policy:\n  endpoints:\n    - base_url: {stub.base_url}\n      model: stub\n"
        (tmp_path / "r.yaml").write_text(policy)
        (tmp_path / "all.yaml").write_text(policy + "critique:\n  constitution: c.yaml\n  principles: all\n")
        args = [
            "judge-eval",
            "--pairs",
            str(pairs),
            "--constitution",
            str(const),
            "--recipe",
            str(tmp_path / "r.yaml"),
        ]
        assert main([*args, "--json", str(out)]) == 0
        calls = len(stub.calls)
        every = [
            "judge-eval",
            "--pairs",
            str(pairs),
            "--judge",
            "constitution",
            "--recipe",
            str(tmp_path / "all.yaml"),
        ]
        assert main([*every, "--json", str(tmp_path / "all.json")]) == 0
        calls_all = len(stub.calls) - calls
    assert calls == 2 * 2 * 1  # pairs x orders x one sampled principle
    assert calls_all == 2 * 2 * 2  # pairs x orders x principles
    for res in (json.loads(out.read_text()), json.loads((tmp_path / "all.json").read_text())):
        assert res["judge"] == "constitution" and res["accuracy"] == 1.0 and res["consistency"] == 1.0
        assert res["soft_accuracy"] == pytest.approx(0.8) and res["brier"] == pytest.approx(0.04)
        assert res["p_first"] == 0.5 and res["parse_failures"] == 0


def test_constitution_label_judge_letters_without_logprobs_and_one_sampled_principle(tmp_path):
    from serving.client import LLMClient
    from serving.endpoint import ClientConfig, Endpoint

    const = tmp_path / "c.yaml"
    const.write_text(CONSTITUTION)
    cfg = ConstitutionConfig(constitution=str(const), principles="sample", logprobs=False)

    async def go(url: str) -> tuple[Preference, Preference]:
        client = LLMClient(
            [Endpoint(base_url=url, model="stub")], ClientConfig(max_retries=1, backoff_base_s=0.01)
        )
        try:
            judge = ConstitutionJudge(cfg, client)
            q = as_prompt("q")
            return await judge.prefer(q, "right", "wrong"), await judge.prefer(q, "wrong", "right")
        finally:
            await client.aclose()

    with choice_stub(logprobs=False) as stub:
        fwd, bwd = asyncio.run(go(stub.base_url))
        assert len(stub.calls) == 2  # one sampled principle per shown order
        asked = {q for c in stub.calls for q in ("correct", "kinder") if q in c["messages"][0]["content"]}
    assert len(asked) == 1  # the same principle for both orders of the pair
    assert (fwd.winner, fwd.p_x, bwd.winner, bwd.p_x) == ("x", None, "y", None)
    # in a run, one sampled principle per item too: critique + revision per completion, 2 orders per pair
    assert ConstitutionJudge(cfg).requests_per_prompt(3) == 2 * 3
    assert ConstitutionJudge(cfg.model_copy(update={"mode": "label"})).requests_per_prompt(3) == 2 * 1
    assert ConstitutionJudge(cfg.model_copy(update={"principles": "all"})).requests_per_prompt(3) == 2 * 3 * 2


def test_reward_model_prefers_with_the_bradley_terry_probability(tmp_path, monkeypatch):
    from judges import reward_model as rm

    folder = tmp_path / "rm"
    folder.mkdir()
    (folder / "config.json").write_text("{}")

    class FakeScorer:  # normalised score = length / 10; raw scores are spread by std 2
        std = 2.0

        def score(self, prompts: list, answers: list[str]) -> list[float]:
            return [len(a) / 10 for a in answers]

    cfg = rm.RewardModelConfig(reward_model=str(folder))
    monkeypatch.setitem(rm._SCORERS, (str(folder.resolve()), cfg.max_length), FakeScorer())
    pairs = [LabelledPair(prompt="q", chosen="x" * 20, rejected="y" * 10)]
    res = asyncio.run(evaluate(rm.RewardModelJudge(cfg), pairs))
    p = 1 / (1 + math.exp(-(2.0 - 1.0) * 2.0))  # sigmoid of the raw score difference
    assert res.accuracy == 1.0 and res.consistency == 1.0
    assert res.soft_accuracy == pytest.approx(p) and res.brier == pytest.approx((1 - p) ** 2)
