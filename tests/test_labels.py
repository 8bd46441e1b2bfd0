"""Labels proven right by hand-computed tables: binarisation rules, the pairwise verdict gate,
two-order verdict aggregation and the soft label read from the verdict token. No model, no network.
"""

from __future__ import annotations

import math
from typing import Any

import pytest

from flows.dataset.binarize import BinarizeStats, binarize_prompt, candidate_pairs
from flows.recipe import BinarizeSpec
from judges.helpers import choice_probability
from judges.pairwise import OrderedVerdict, combine

RULES = ("best-vs-random-lower", "best-vs-worst", "all-pairs")


def make_row(scores: list[float | None], responses: list[str] | None = None, pid: str = "p1",
             offset: int = 0) -> dict[str, Any]:  # fmt: skip
    """One UltraFeedback row; completion i is `r{i}` by model `m{i}` with sample_index offset + i."""
    responses = responses or [f"r{i}" for i in range(len(scores))]
    return {
        "prompt_id": pid,
        "messages": [{"role": "user", "content": "q"}],
        "completions": [
            {"sample_index": offset + i, "response": resp, "model": f"m{i}",
             "scores": {} if s is None else {"uf": s}}
            for i, (resp, s) in enumerate(zip(responses, scores, strict=True))
        ],
    }  # fmt: skip


def run(row, rule, keep_ties=False, min_margin=0.0, verdicts=None, seed=42):
    spec = BinarizeSpec(rule=rule, keep_ties=keep_ties, min_margin=min_margin, seed=seed)
    stats = BinarizeStats()
    pairs = binarize_prompt(row, "uf", spec, verdicts, stats)
    for p in pairs:  # every field of a pair agrees with the completion it names
        c = next(x for x in row["completions"] if x["response"] == p.chosen[0]["content"])
        r = next(x for x in row["completions"] if x["response"] == p.rejected[0]["content"])
        assert (p.chosen_model, p.rejected_model) == (c["model"], r["model"])
        assert (p.score_chosen, p.score_rejected) == (c["scores"]["uf"], r["scores"]["uf"])
        assert p.margin == p.score_chosen - p.score_rejected >= min_margin
        assert p.chosen[0]["role"] == p.rejected[0]["role"] == "assistant"
        assert p.prompt == row["messages"] and p.prompt_id == row["prompt_id"]
        assert p.origin == "judge" and p.judge == "uf"
    return [(p.chosen[0]["content"], p.rejected[0]["content"]) for p in pairs], stats


def counters(pairs=0, ties=0, below=0, disagrees=0, **extra) -> dict[str, int]:
    base = BinarizeStats(prompts=1, pairs=pairs, ties_dropped=ties, below_margin=below,
                         verdict_disagrees=disagrees, candidates=pairs + ties + below + disagrees)  # fmt: skip
    return base.model_dump() | extra


# Score shapes. NONE: no ties. SOME: ties at the top (r0 = r2 = 4) and the bottom (r1 = r3 = 2).
# ALL: every completion ties.
SHAPES = {"none": [3, 5, 1, 4], "some": [4, 2, 4, 2], "all": [3, 3, 3]}
M = 1.5  # the min_margin > 0 used below

# Deterministic rules: (rule, shape, min_margin, keep_ties) -> (pairs as (chosen, rejected), stats).
# Hand-computed. best = highest score, lowest index on ties; best-vs-worst's worst = lowest score,
# lowest index among the others; all-pairs orders a tied pair by index.
DETERMINISTIC = {
    # best-vs-worst, none [3,5,1,4]: best r1 (5), worst r2 (1), margin 4: kept everywhere.
    ("best-vs-worst", "none", 0, False): ([("r1", "r2")], counters(1)),
    ("best-vs-worst", "none", 0, True): ([("r1", "r2")], counters(1)),
    ("best-vs-worst", "none", M, False): ([("r1", "r2")], counters(1)),
    ("best-vs-worst", "none", M, True): ([("r1", "r2")], counters(1)),
    # some [4,2,4,2]: best r0 (tie with r2, lower index), worst r1 (tie with r3), margin 2.
    ("best-vs-worst", "some", 0, False): ([("r0", "r1")], counters(1)),
    ("best-vs-worst", "some", 0, True): ([("r0", "r1")], counters(1)),
    ("best-vs-worst", "some", M, False): ([("r0", "r1")], counters(1)),
    ("best-vs-worst", "some", M, True): ([("r0", "r1")], counters(1)),
    # all [3,3,3]: a tie; dropped and counted, or kept as (r0, r1) with margin 0 (Bug C).
    ("best-vs-worst", "all", 0, False): ([], counters(ties=1)),
    ("best-vs-worst", "all", 0, True): ([("r0", "r1")], counters(1)),
    ("best-vs-worst", "all", M, False): ([], counters(ties=1)),
    ("best-vs-worst", "all", M, True): ([], counters(below=1)),
    # all-pairs, none [3,5,1,4]: margins r1>r0 2, r0>r2 2, r3>r0 1, r1>r2 4, r1>r3 1, r3>r2 3.
    ("all-pairs", "none", 0, False): (
        [("r1", "r0"), ("r0", "r2"), ("r3", "r0"), ("r1", "r2"), ("r1", "r3"), ("r3", "r2")],
        counters(6),
    ),
    ("all-pairs", "none", 0, True): (
        [("r1", "r0"), ("r0", "r2"), ("r3", "r0"), ("r1", "r2"), ("r1", "r3"), ("r3", "r2")],
        counters(6),
    ),
    ("all-pairs", "none", M, False): (
        [("r1", "r0"), ("r0", "r2"), ("r1", "r2"), ("r3", "r2")],
        counters(4, below=2),
    ),
    ("all-pairs", "none", M, True): (
        [("r1", "r0"), ("r0", "r2"), ("r1", "r2"), ("r3", "r2")],
        counters(4, below=2),
    ),
    # some [4,2,4,2]: 4 pairs with margin 2; ties r0=r2 and r1=r3 (kept by index, margin 0).
    ("all-pairs", "some", 0, False): (
        [("r0", "r1"), ("r0", "r3"), ("r2", "r1"), ("r2", "r3")],
        counters(4, ties=2),
    ),
    ("all-pairs", "some", 0, True): (
        [("r0", "r1"), ("r0", "r2"), ("r0", "r3"), ("r2", "r1"), ("r1", "r3"), ("r2", "r3")],
        counters(6),
    ),
    ("all-pairs", "some", M, False): (
        [("r0", "r1"), ("r0", "r3"), ("r2", "r1"), ("r2", "r3")],
        counters(4, ties=2),
    ),
    ("all-pairs", "some", M, True): (
        [("r0", "r1"), ("r0", "r3"), ("r2", "r1"), ("r2", "r3")],
        counters(4, below=2),
    ),
    # all [3,3,3]: three tied pairs.
    ("all-pairs", "all", 0, False): ([], counters(ties=3)),
    ("all-pairs", "all", 0, True): ([("r0", "r1"), ("r0", "r2"), ("r1", "r2")], counters(3)),
    ("all-pairs", "all", M, False): ([], counters(ties=3)),
    ("all-pairs", "all", M, True): ([], counters(below=3)),
}

# best-vs-random-lower: (shape, min_margin, keep_ties) -> (chosen, {allowed rejected: outcome}).
# An outcome "kept" yields the pair; "below" drops it as below_margin; "tie" drops it as a tie.
RANDOM_LOWER = {
    # none [3,5,1,4]: best r1; lower r0 (margin 2), r2 (4), r3 (1).
    ("none", 0, False): ("r1", {"r0": "kept", "r2": "kept", "r3": "kept"}),
    ("none", 0, True): ("r1", {"r0": "kept", "r2": "kept", "r3": "kept"}),
    ("none", M, False): ("r1", {"r0": "kept", "r2": "kept", "r3": "below"}),
    ("none", M, True): ("r1", {"r0": "kept", "r2": "kept", "r3": "below"}),
    # some [4,2,4,2]: best r0; lower r1, r3 (margin 2); r2 ties r0 and is never the rejected.
    ("some", 0, False): ("r0", {"r1": "kept", "r3": "kept"}),
    ("some", 0, True): ("r0", {"r1": "kept", "r3": "kept"}),
    ("some", M, False): ("r0", {"r1": "kept", "r3": "kept"}),
    ("some", M, True): ("r0", {"r1": "kept", "r3": "kept"}),
    # all [3,3,3]: no lower one; a tie with any other, or dropped as a tie.
    ("all", 0, False): ("r0", {"*": "tie"}),
    ("all", 0, True): ("r0", {"r1": "kept", "r2": "kept"}),
    ("all", M, False): ("r0", {"*": "tie"}),
    ("all", M, True): ("r0", {"r1": "below", "r2": "below"}),
}


def test_tables_cover_every_combination():
    combos = {(s, m, k) for s in SHAPES for m in (0, M) for k in (False, True)}
    assert set(RANDOM_LOWER) == combos
    assert set(DETERMINISTIC) == {(r, *c) for r in ("best-vs-worst", "all-pairs") for c in combos}


@pytest.mark.parametrize(("rule", "shape", "margin", "keep"), list(DETERMINISTIC),
                         ids=[f"{r}-{s}-m{m}-keep{k}" for r, s, m, k in DETERMINISTIC])  # fmt: skip
def test_deterministic_rules(rule, shape, margin, keep):
    want_pairs, want_stats = DETERMINISTIC[(rule, shape, margin, keep)]
    pairs, stats = run(make_row(SHAPES[shape]), rule, keep, margin)
    assert sorted(pairs) == sorted(want_pairs)
    assert stats.model_dump() == want_stats


@pytest.mark.parametrize(("shape", "margin", "keep"), list(RANDOM_LOWER),
                         ids=[f"{s}-m{m}-keep{k}" for s, m, k in RANDOM_LOWER])  # fmt: skip
def test_best_vs_random_lower(shape, margin, keep):
    chosen, allowed = RANDOM_LOWER[(shape, margin, keep)]
    seen = set()
    for n in range(40):  # many prompt ids: every allowed rejected shows up, nothing else does
        row = make_row(SHAPES[shape], pid=f"p{n}")
        pairs, stats = run(row, "best-vs-random-lower", keep, margin)
        assert (pairs, stats) == run(row, "best-vs-random-lower", keep, margin)  # reproducible
        if "*" in allowed:
            assert pairs == [] and stats.model_dump() == counters(ties=1)
            continue
        # the candidate pair: min_margin does not move the random choice, so min_margin 0 shows it
        [(best, rejected)] = run(row, "best-vs-random-lower", keep, 0.0)[0]
        assert best == chosen and rejected in allowed
        if allowed[rejected] == "kept":
            assert pairs == [(chosen, rejected)] and stats.model_dump() == counters(1)
        else:
            assert pairs == [] and stats.model_dump() == counters(below=1)
        seen.add(rejected)
    if "*" not in allowed:
        assert seen == set(allowed)


def test_random_lower_depends_on_seed_and_prompt_only():
    row = make_row(SHAPES["none"])
    picks = {run(row, "best-vs-random-lower", seed=s)[0][0][1] for s in range(30)}
    assert picks == {"r0", "r2", "r3"}  # the spec seed moves the choice ...
    first = run(row, "best-vs-random-lower", seed=7)[0]
    assert all(run(row, "best-vs-random-lower", seed=7)[0] == first for _ in range(5))  # ... only it


@pytest.mark.parametrize("rule", RULES)
def test_bug_c_all_tie_keep_ties_is_never_silently_dropped(rule):
    """Bug C: best-vs-worst + keep_ties lost an all-tie prompt (best == worst index) and counted
    nothing. Every rule must keep a pair from the tie, or drop it and count it."""
    for scores in ([3, 3], [3, 3, 3], [None, 2, 2, None, 2]):
        row = make_row(scores)
        kept, kept_stats = run(row, rule, keep_ties=True)
        assert kept and kept_stats.ties_dropped == 0 and kept_stats.pairs == len(kept)
        first = scores.index(2 if None in scores else 3)
        assert all(c != r for c, r in kept)
        assert kept[0][0] == f"r{first}"  # chosen = lowest index among the best
        dropped, stats = run(row, rule, keep_ties=False)
        assert dropped == [] and stats.ties_dropped >= 1 and stats.pairs == 0


def test_bug_c_candidate_pairs_all_tie():
    import random

    for keep in (False, True):
        pairs, drops = candidate_pairs([1.0, 1.0, 1.0], "best-vs-worst", random.Random(0), keep)
        assert (pairs, drops) == (([(0, 1)], {}) if keep else ([], {"tie": 1}))
    pairs, drops = candidate_pairs([None, 2.0, 2.0], "best-vs-worst", random.Random(0), True)
    assert (pairs, drops) == ([(1, 2)], {})


def test_too_few_and_unscored_are_counted():
    for rule in RULES:
        assert run(make_row([5]), rule)[1].model_dump() == counters(too_few_completions=1)
        assert run(make_row([5, None, None]), rule)[1].model_dump() == counters(unscored=1)
        # an unscored completion is never paired
        pairs, stats = run(make_row([None, 4, 1]), rule)
        assert pairs == [("r1", "r2")] and stats.model_dump() == counters(1)


# ---- b. the pairwise verdict gate ------------------------------------------------------------
# Row [3,5,1,4] with sample_index = 10 + position: best-vs-worst's pair is r1 (sample 11) over
# r2 (sample 12). verdicts[(i, j)] names the winner between x = sample i and y = sample j.
GATE = [
    ({(11, 12): "x"}, True),
    ({(12, 11): "y"}, True),
    ({(11, 12): "y"}, False),
    ({(12, 11): "x"}, False),
    ({(11, 12): "tie"}, False),
    ({(12, 11): "tie"}, False),
    ({}, False),  # no verdict for the pair: not confirmed
    ({(1, 2): "x"}, False),  # positions are not sample indices
    ({(11, 12): "x", (12, 11): "x"}, True),  # the (chosen, rejected) key is read first
]


@pytest.mark.parametrize(("verdicts", "kept"), GATE)
def test_verdict_gate(verdicts, kept):
    pairs, stats = run(make_row([3, 5, 1, 4], offset=10), "best-vs-worst", verdicts=verdicts)
    assert pairs == ([("r1", "r2")] if kept else [])
    assert stats.model_dump() == (counters(1) if kept else counters(disagrees=1))


def test_verdict_gate_all_pairs_and_margin_order():
    # [3,5,1,4] all-pairs: (r1,r0) (r0,r2) (r3,r0) (r1,r2) (r1,r3) (r3,r2), samples = positions.
    verdicts = {(1, 0): "x", (2, 0): "y", (0, 3): "x", (1, 2): "tie", (3, 1): "y", (3, 2): "x"}
    # (r1,r0) x: kept; (r0,r2) via (2,0) y: kept; (r3,r0) via (0,3) x: disagrees;
    # (r1,r2) tie: disagrees; (r1,r3) via (3,1) y: kept but margin 1 < 1.5; (r3,r2) x: kept.
    pairs, stats = run(make_row([3, 5, 1, 4]), "all-pairs", min_margin=M, verdicts=verdicts)
    assert sorted(pairs) == sorted([("r1", "r0"), ("r0", "r2"), ("r3", "r2")])
    assert stats.model_dump() == counters(3, below=1, disagrees=2)


# ---- c. two-order aggregation ----------------------------------------------------------------
# forward shows x as A, backward shows y as A: forward A = x, B = y; backward A = y, B = x.
COMBINE = [
    # (forward, backward) -> (winner, consistent, parse_failures)
    (("A", "A"), ("tie", False, 0)),  # x then y: position bias
    (("A", "B"), ("x", True, 0)),
    (("A", "tie"), ("tie", False, 0)),
    (("B", "A"), ("y", True, 0)),
    (("B", "B"), ("tie", False, 0)),
    (("B", "tie"), ("tie", False, 0)),
    (("tie", "A"), ("tie", False, 0)),
    (("tie", "B"), ("tie", False, 0)),
    (("tie", "tie"), ("tie", True, 0)),
    ((None, "A"), ("tie", False, 1)),
    ((None, "B"), ("tie", False, 1)),
    (("A", None), ("tie", False, 1)),
    (("B", None), ("tie", False, 1)),
    ((None, None), ("tie", False, 2)),
]


@pytest.mark.parametrize(("orders", "want"), COMBINE, ids=[f"{f}-{b}" for (f, b), _ in COMBINE])
def test_combine_verdicts(orders, want):
    f, b = orders
    fwd = OrderedVerdict(verdict=f, error=None if f else "unparseable judge output")
    bwd = OrderedVerdict(verdict=b, error=None if b else "unparseable judge output")
    pv = combine(fwd, bwd)
    assert (pv.winner, pv.consistent, pv.parse_failures) == want
    assert pv.p_x is None and pv.forward is fwd and pv.backward is bwd


@pytest.mark.parametrize(
    ("p_forward", "p_backward", "p_x"),
    [(0.8, 0.3, 0.75), (0.8, None, 0.8), (None, 0.3, 0.7), (None, None, None), (1.0, 0.0, 1.0),
     (0.2, 0.9, 0.15), (0.5, 0.5, 0.5)],
)  # fmt: skip
def test_combine_soft_label(p_forward, p_backward, p_x):
    # p_x = mean(P(A) forward, 1 - P(A) backward); independent of the hard verdicts
    pv = combine(OrderedVerdict(verdict="A", p_a=p_forward), OrderedVerdict(verdict="A", p_a=p_backward))
    assert pv.p_x == (None if p_x is None else pytest.approx(p_x))
    assert pv.winner == "tie" and not pv.consistent


# ---- d. swap catching: the higher score always has the longer response -----------------------
@pytest.mark.parametrize("rule", RULES)
@pytest.mark.parametrize("gated", [False, True])
def test_chosen_is_always_the_longer(rule, gated):
    scores = [2, 5, 1, 4, 3]
    responses = [f"r{i}:" + "+" * (10 * s) for i, s in enumerate(scores)]
    row = make_row(scores, responses)
    verdicts = None
    if gated:  # the judge agrees with the scores, keyed in both orders
        verdicts = {(i, j): ("x" if scores[i] > scores[j] else "y")
                    for i in range(5) for j in range(5) if i < j and (i + j) % 2 == 0}  # fmt: skip
        verdicts |= {(j, i): ("x" if scores[j] > scores[i] else "y")
                     for i in range(5) for j in range(5) if i < j and (i + j) % 2 == 1}  # fmt: skip
    for n in range(10):
        row["prompt_id"] = f"p{n}"
        pairs, stats = run(row, rule, verdicts=verdicts)
        assert pairs and stats.verdict_disagrees == 0
        assert stats.pairs == len(pairs) == (10 if rule == "all-pairs" else 1)
        for chosen, rejected in pairs:
            assert len(chosen) > len(rejected), (rule, chosen, rejected)
        if rule == "best-vs-worst":
            assert pairs == [(responses[1], responses[2])]


# ---- Bug I: the soft label is read at the verdict token --------------------------------------
def lp(*tokens: str | tuple[str, dict[str, float]]) -> list[dict[str, Any]]:
    """Logprob entries; a bare string is a sure token (logprob 0, no alternatives given)."""
    out = []
    for t in tokens:
        tok, alts = (t, {t: 0.0}) if isinstance(t, str) else t
        out.append({"token": tok, "logprob": alts.get(tok, -9.0),
                    "top_logprobs": [{"token": k, "logprob": v} for k, v in alts.items()]})  # fmt: skip
    return out


def ratio(la: float, lb: float) -> float:
    return math.exp(la) / (math.exp(la) + math.exp(lb))


def tied(la: float, lb: float, lt: float) -> float:
    """P(A) with a tie's probability counted half for each option."""
    return (math.exp(la) + math.exp(lt) / 2) / (math.exp(la) + math.exp(lb) + math.exp(lt))


RATIONALE_A = ("A", {"A": -0.1, "B": -3.0})  # an "A" inside a rationale: never to be read

CHOICE = [
    # rationale first: the old reader took the rationale's "A"
    ("rationale-first",
     lp('{"', "rationale", '":', ' "', RATIONALE_A, " is", " better", '",', ' "', "verdict", '":',
        ' "', ("B", {"B": -0.2, "A": -1.8}), '"}'),
     ratio(-1.8, -0.2)),
    # verdict first, rationale mentions A
    ("verdict-first",
     lp('{"', "verdict", '":', ' "', ("B", {"B": -0.5, "A": -1.0, "tie": -3}), '",', ' "',
        "rationale", '":', ' "', RATIONALE_A, '"}'),
     tied(-1.0, -0.5, -3)),
    # a tie verdict: its probability counts half for each side, so it reads as about even (it read
    # as a confident P(A) = 0.62 when the tie's mass was left out)
    ("tie-verdict",
     lp('{"', "verdict", '":', ' "', ("tie", {"tie": -0.1, "A": -2.5, "B": -3.0}), '",', ' "',
        "rationale", '":', ' "', RATIONALE_A, " and", " B", " equal", '"}'),
     tied(-2.5, -3.0, -0.1)),
    # a tie with neither option among the alternatives there: no soft label
    ("tie-without-options",
     lp('{"', "verdict", '":', ' "', ("tie", {"tie": -0.01, "t": -5.0}), '",', ' "', "rationale",
        '":', ' "', RATIONALE_A, '"}'),
     None),
    # only one option among the alternatives, which leave no mass for the other: the tie still counts
    # half (it read as exactly 0.0, a certain B, for a tie verdict)
    ("one-option", lp('{"', "verdict", '":', ' "', ("tie", {"tie": -0.1, "B": -2.0}), '"}'),
     (math.exp(-0.1) / 2) / (math.exp(-0.1) + math.exp(-2.0))),
    # the other option missing while the listed ones leave mass: it gets the least listed probability
    # (a bound), never 0, so the label is not a certainty (it read as exactly 1.0)
    ("missing-option", lp('{"', "verdict", '":', ' "', ("A", {"A": -0.7, "C": -2.0, "D": -2.5}), '"}'),
     ratio(-0.7, -2.5)),
    # quote and letter in one token, no spaces, alternatives spelled alike
    ("merged-quote",
     lp('{"', "verdict", '":"', ("A", {"A": -0.3, "B": -1.4}), '","', "rationale", '":"', "B", '"}'),
     ratio(-0.3, -1.4)),
    ("merged-quote-letter",
     lp("{", '"verdict"', ":", (' "A', {' "A': -0.3, ' "B': -1.4, ' "tie': -4.0}), '"', "}"),
     tied(-0.3, -1.4, -4.0)),
    # spaces around the colon, a nested "verdict" key and an escaped one inside a string
    ("nested-and-escaped",
     lp("{", ' "notes"', ": {", '"verdict"', ': "', RATIONALE_A, '"},', ' "rationale"', ': "', "\\",
        '"verdict', "\\", '": ', "\\", '"', RATIONALE_A, "\\", '""', ",", ' "verdict"', " :  ",
        '"', ("B", {"A": -2.0, "B": -0.2}), '"', " }"),
     ratio(-2.0, -0.2)),
    # fenced JSON with prose before it
    ("fenced",
     lp("Sure", " A", " is", " fine", ".\n```json\n", '{"', "verdict", '":', ' "',
        ("A", {"A": -0.7, "B": -0.7}), '"}', "\n```"),
     0.5),
    # JSON without a verdict: no position, even with an A in it
    ("no-verdict-key", lp('{"', "rationale", '":', ' "', RATIONALE_A, '"}'), None),
    # truncated right after the opening quote of the value
    ("truncated", lp(RATIONALE_A, ' {"', "verdict", '":', ' "'), None),
    # bare answers (the constitutional judge: structured choice "A"/"B", max_tokens 1)
    ("bare", lp(("A", {"A": -0.2, "B": -1.7})), ratio(-0.2, -1.7)),
    ("bare-variants", lp(("A", {"A": -1.0, " A": -1.5, "B": -0.5, "(B": -2.0})),
     ratio(math.log(math.exp(-1.0) + math.exp(-1.5)), math.log(math.exp(-0.5) + math.exp(-2.0)))),
    ("bare-paren", lp("(", ("B", {"B": -0.1, "A": -2.3}), ")"), ratio(-2.3, -0.1)),
    ("bare-space", lp(" ", ("B", {"A": -1.0, "B": -1.0})), 0.5),
    ("bare-prose", lp("The", " answer", " is", RATIONALE_A), None),
    ("empty", [], None),
]  # fmt: skip


@pytest.mark.parametrize(("logprobs", "want"), [c[1:] for c in CHOICE], ids=[c[0] for c in CHOICE])
def test_choice_probability_reads_the_verdict_token(logprobs, want):
    got = choice_probability(logprobs, ("A", "B"))
    assert got == (None if want is None else pytest.approx(want))


def test_choice_probability_edges():
    assert choice_probability(None) is None
    # no top_logprobs: the chosen token itself, and the other option bounded by the mass it leaves
    assert choice_probability([{"token": "B", "logprob": -0.1}]) == pytest.approx(1 - math.exp(-0.1))
    assert choice_probability([{"token": "A", "logprob": -0.1, "top_logprobs": []}]) == pytest.approx(
        math.exp(-0.1)
    )
    # the chosen token is counted when the alternatives leave it out (sampled outside the top-k)
    entry = {"token": "B", "logprob": -2.0, "top_logprobs": [{"token": "A", "logprob": -1.0}]}
    assert choice_probability([entry]) == pytest.approx(ratio(-1.0, -2.0))
    # other option names
    assert choice_probability(lp(("x", {"x": -1.0, "y": -1.0})), ("x", "y")) == 0.5
