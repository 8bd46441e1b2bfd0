"""Build lints on a hand-written dataset with planted cases (truncated best, identical and empty pairs,
duplicate and near-duplicate prompts, prompts copied from eval sets) and soft labels (`p_chosen`).
Expected figures are worked out by hand in the comments. No model, no network."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk

from flows.dataset.binarize import BinarizeStats, PairRow, binarize_prompt, verdict_probabilities
from flows.dataset.build import ShardFiles, build
from flows.dataset.card import write_card
from flows.dataset.lints import Linter, ngrams
from flows.dataset.schema import binarized_features, uf_features
from flows.recipe import BinarizeSpec, LintSpec, Recipe, load_recipe
from serving.errors import ConfigError

C, R, T = "c" * 20, "r" * 10, "t" * 30  # a complete chosen, a rejected, a truncated answer
EVAL_LONG = ("Summarize the main causes of the French Revolution and explain how economic hardship "
             "among peasants contributed to the unrest of 1789.")  # fmt: skip
LIGHTHOUSE = ("Describe how a lighthouse keeper in the nineteenth century would spend a stormy winter "
              "night alone on a rocky island far from the mainland.")  # fmt: skip
HAIKU = "Write a haiku about autumn leaves falling into a quiet river at dusk."


def comp(i: int, text: str, score: float, finish: str = "stop") -> dict:
    return {"sample_index": i, "model": "m", "response": text, "finish_reason": finish,
            "completion_tokens": len(text), "scores": {"uf": score}}  # fmt: skip


def row(pid: str, prompt: str, comps: list[dict], verdicts: list[dict] | None = None) -> dict:
    return {"prompt_id": pid, "prompt": prompt, "messages": [{"role": "user", "content": prompt}],
            "source": "t", "completions": comps, "pairwise_verdicts": verdicts or []}  # fmt: skip


def verdict(i: int, j: int, p_x: float | None, judge: str = "pw") -> dict:
    return {"judge": judge, "i": i, "j": j, "winner": "x" if (p_x or 0.5) >= 0.5 else "y",
            "consistent": True, "p_x": p_x}  # fmt: skip


STD = [comp(0, C, 5), comp(1, R, 1)]  # chosen C (20 chars) vs R (10): longer chosen, gap +10
ROWS = [
    # truncated best (5) -> chosen is the best complete one (3); the truncated one is not rejected
    # either, as it scored higher. With the flag: T (5) vs R (1).
    row("p01", "Explain why the sky appears blue during the day but red at sunset.",
        [comp(0, T, 5, "length"), comp(1, C, 3), comp(2, R, 1)]),
    # a truncated answer that scored lower is rejected as usual: C (20) vs T (30), gap -10
    row("p02", "List three differences between frogs and toads for a school project.",
        [comp(0, C, 4), comp(1, T, 2, "length")]),
    # every answer truncated: no pair and no best-of-N row (with the flag: T vs T-ish, gap +20)
    row("p03", "Give me a detailed recipe for sourdough bread with a rye starter.",
        [comp(0, T, 5, "length"), comp(1, R, 1, "length")]),
    row("p04", "What is the square root of one hundred and forty four?",  # identical after whitespace
        [comp(0, "The answer is 12.", 5), comp(1, " The  answer is 12.\n", 2)]),
    row("p05", "Name the capital city of France and one famous museum there.",  # empty rejected
        [comp(0, "Paris; the Louvre.", 5), comp(1, "  ", 1)]),
    row("p06", LIGHTHOUSE, STD),
    row("p07", LIGHTHOUSE.replace("mainland.", "mainland, please."), STD),  # near duplicate of p06
    row("p08", HAIKU, STD),
    row("p09", "  " + HAIKU.replace(" ", "  ") + "\n", STD),  # exact duplicate of p08 (whitespace)
    row("p10", EVAL_LONG, STD),  # copied from eval.jsonl: dropped
    row("p11", "How do vaccines train the immune system to recognise a virus?", STD, [verdict(0, 1, 0.8)]),
    row("p12", "Why do cats purr, and is it always a sign of contentment?", STD, [verdict(1, 0, 0.25)]),
    row("p13", "Translate 'good morning' into Spanish, German and Japanese.", STD, [verdict(0, 1, None)]),
    row("p14", "Suggest a name for a small bakery in a coastal town.", [comp(0, "", 3)]),  # empty SFT
    row("p15", "what is the boiling point of water at sea level", STD),  # = eval.csv's (short) question
]  # fmt: skip


def write_inputs(tmp: Path) -> tuple[list[ShardFiles], list[str]]:
    shard = tmp / "shard"
    shard.mkdir(exist_ok=True)
    schema = uf_features([], ["uf"], with_provenance=False).arrow_schema
    pq.write_table(pa.Table.from_pylist(ROWS, schema=schema), shard / "rows.parquet")
    msgs = [{"role": "user", "content": "q"}]
    # a constitutional label with winner y ("k" * 15 over x = "k" * 25) and p_x 0.1: P(chosen) 0.9
    cps = [PairRow(prompt_id=pid, prompt=msgs, chosen=[{"role": "assistant", "content": "k" * 15}],
                   rejected=[{"role": "assistant", "content": "k" * 25}], score_chosen=0.9, score_rejected=0.1,
                   margin=0.8, p_chosen=0.9, chosen_model="m", rejected_model="m", origin="constitution",
                   judge="constitution:label", principle_id="p", principle_sha256="s")
           for pid in ("p11", "p10")]  # fmt: skip
    cp_rows = [{**p.model_dump(), "messages": msgs + p.chosen} for p in cps]
    pq.write_table(
        pa.Table.from_pylist(cp_rows, schema=binarized_features().arrow_schema), shard / "cpairs.parquet"
    )
    (tmp / "eval.jsonl").write_text(
        json.dumps({"prompt": EVAL_LONG}) + "\n" + json.dumps({"prompt": "Hi"}) + "\n"
    )
    (tmp / "eval.csv").write_text("question,answer\nWhat is the boiling point of water at sea level?,100 C\n")
    files = [ShardFiles(rows_path=str(shard / "rows.parquet"), cpairs_path=str(shard / "cpairs.parquet"))]
    return files, [str(tmp / "eval.jsonl"), str(tmp / "eval.csv")]


def run_build(tmp: Path, lints: LintSpec | None = None, out: str = "out"):
    files, evals = write_inputs(tmp)
    spec = BinarizeSpec(rule="best-vs-worst", test_fraction=0.0)
    schema = uf_features([], ["uf"]).arrow_schema
    return build(tmp / out, files, spec, "uf", schema, {"policy": "m"}, lints=lints, decontaminate=evals)


def pairs_by_prompt(out: Path) -> dict[str, list[dict]]:
    got: dict[str, list[dict]] = {}
    for r in pq.read_table(out / "parquet" / "binarized" / "train_prefs.parquet").to_pylist():
        got.setdefault(r["prompt_id"], []).append(r)
    return got


def test_planted_cases_are_counted_and_handled(tmp_path):
    res, _ = run_build(tmp_path)
    lint, st = res.lints, res.stats
    out = tmp_path / "out"
    assert lint.truncated_completions == 4  # p01: 1, p02: 1, p03: 2
    assert (st.truncated_chosen_repicked, st.truncated_chosen_dropped) == (1, 1)  # p01, p03
    assert (st.truncated_sft_repicked, st.truncated_sft_dropped) == (1, 1)
    assert (lint.identical_pairs_dropped, lint.empty_pairs_dropped, lint.empty_sft_dropped) == (1, 1, 1)
    assert (lint.exact_duplicate_prompts, lint.near_duplicate_prompts) == (1, 1)
    assert sorted(lint.duplicate_examples) == [("p06", "p07", "near"), ("p08", "p09", "exact")]
    assert lint.duplicate_prompts_dropped == 0  # counted, kept
    evals = [str(tmp_path / "eval.jsonl"), str(tmp_path / "eval.csv")]
    assert lint.decontaminated == {evals[0]: 1, evals[1]: 1} and lint.decontaminated_prompts == 2

    pairs = pairs_by_prompt(out)
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs["p01"]] == [(C, R)]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs["p02"]] == [(C, T)]
    assert not {"p03", "p04", "p05", "p10", "p14", "p15"} & set(pairs)
    assert {"p06", "p07", "p08", "p09"} <= set(pairs)  # duplicates are kept by default
    # kept pairs: p01 +10, p02 -10, p06-p09 and p11-p13 +10 each (7), constitution p11 15 vs 25: -10
    assert res.pairs["train_prefs"] == 10 and res.constitution_pairs == 1
    assert lint.longer_chosen_share == pytest.approx(8 / 10)
    assert lint.mean_length_gap == pytest.approx((10 - 10 + 70 - 10) / 10)

    uf_ids = {
        r["prompt_id"] for r in pq.read_table(out / "parquet" / "ultrafeedback" / "train.parquet").to_pylist()
    }
    assert uf_ids == {r["prompt_id"] for r in ROWS} - {"p10", "p15"} and res.prompts == 13
    sft = {
        r["prompt_id"]: r["chosen"][0]["content"] for r in load_from_disk(str(out / "binarized"))["train_sft"]
    }
    assert sft["p01"] == C and "p03" not in sft and "p14" not in sft and len(sft) == 11


def test_soft_labels(tmp_path):
    run_build(tmp_path)
    pairs = pairs_by_prompt(tmp_path / "out")
    judge = {pid: [p["p_chosen"] for p in ps if p["origin"] == "judge"] for pid, ps in pairs.items()}
    assert judge["p11"] == [pytest.approx(0.8)]  # chosen is x of the verdict: p_x
    assert judge["p12"] == [pytest.approx(0.75)]  # chosen is y of the verdict (1, 0): 1 - 0.25
    assert judge["p13"] == [None] and judge["p06"] == [None]  # no probability, no verdict
    label = [p["p_chosen"] for p in pairs["p11"] if p["origin"] == "constitution"]
    assert label == [pytest.approx(0.9)]  # winner y with p_x 0.1
    # the ranking judge's own verdict wins over another judge's; either order of (i, j) is one pair
    rows = [verdict(0, 1, 0.6, "other"), verdict(1, 0, 0.3, "uf"), verdict(0, 2, 0.9, "other")]
    assert verdict_probabilities(rows, "uf") == {(1, 0): 0.3, (0, 2): 0.9}


def test_truncated_may_be_chosen_with_the_flag(tmp_path):
    res, _ = run_build(tmp_path, LintSpec(allow_truncated_chosen=True))
    pairs = pairs_by_prompt(tmp_path / "out")
    assert [p["chosen"][0]["content"] for p in pairs["p01"]] == [T]
    assert [(p["chosen"][0]["content"], p["rejected"][0]["content"]) for p in pairs["p03"]] == [(T, R)]
    st = res.stats
    assert st.truncated_chosen_repicked == st.truncated_chosen_dropped == st.truncated_sft_dropped == 0
    assert res.lints.truncated_completions == 4  # still counted


def test_duplicates_dropped_when_asked_and_settings_rebuild(tmp_path):
    res, _ = run_build(tmp_path, LintSpec(drop_duplicate_prompts=True))
    assert res.lints.duplicate_prompts_dropped == 2  # p07 (near), p09 (exact)
    assert not {"p07", "p09"} & set(pairs_by_prompt(tmp_path / "out"))
    again, _ = run_build(tmp_path, LintSpec(drop_duplicate_prompts=True))
    assert again.cached
    changed, _ = run_build(tmp_path, LintSpec(near_duplicate_threshold=0.9))
    assert not changed.cached


def test_near_duplicate_threshold():
    a = [f"w{k}" for k in range(30)]
    b = [("x" if k in (7, 15, 23) else "") + w for k, w in enumerate(a)]  # 3 words changed
    sa, sb = ngrams(a, 3), ngrams(b, 3)
    assert len(sa & sb) / len(sa | sb) == 19 / 37  # 28 shingles each, 9 of them changed
    found = {}
    for t in (0.3, 0.8):
        linter = Linter(LintSpec(near_duplicate_threshold=t), [])
        for pid, ws in (("a", a), ("b", b)):
            assert linter.keep_prompt({"prompt_id": pid, "messages": [{"role": "user", "content": " ".join(ws)}],
                                       "completions": []})  # fmt: skip
        found[t] = linter.report.near_duplicate_prompts
    assert found == {0.3: 1, 0.8: 0}  # Jaccard 0.51: a near duplicate at 0.3, not at 0.8


def test_eval_file_content_is_in_the_fingerprint(tmp_path):
    files, evals = write_inputs(tmp_path)
    spec, schema = BinarizeSpec(rule="best-vs-worst", test_fraction=0.0), uf_features([], ["uf"]).arrow_schema
    first, _ = build(tmp_path / "o", files, spec, "uf", schema, {}, decontaminate=evals)
    Path(evals[0]).write_text(json.dumps({"prompt": "nothing in common here"}) + "\n")
    second, _ = build(tmp_path / "o", files, spec, "uf", schema, {}, decontaminate=evals)
    assert not second.cached and first.fingerprint != second.fingerprint
    assert second.lints.decontaminated == {evals[0]: 0, evals[1]: 1}


def test_recipe_lints_and_decontaminate(tmp_path):
    assert Recipe().lints == LintSpec(allow_truncated_chosen=False, near_duplicate_threshold=0.8,
                                      drop_duplicate_prompts=False, decontaminate_ngram=13)  # fmt: skip
    assert Recipe(lints={"allow_truncated_chosen": True}).sha256() != Recipe().sha256()
    bad = tmp_path / "r.yaml"
    bad.write_text("name: x\ndecontaminate:\n  - missing-eval.jsonl\n")
    with pytest.raises(ConfigError) as e:
        load_recipe(bad)
    assert str(e.value) == f"{bad}: decontaminate[0] (line 3): missing-eval.jsonl: no such file or folder"
    (tmp_path / "e.jsonl").write_text("{}\n")
    assert Recipe(decontaminate=[str(tmp_path / "e.jsonl")]).sha256() != Recipe().sha256()


def test_card_has_a_lints_section(tmp_path):
    res, _ = run_build(tmp_path)
    card = write_card(tmp_path / "out", res, Recipe()).read_text()
    section = card.split("## Lints", 1)[1].split("\n## ", 1)[0]
    assert "| truncated completions (finish_reason length) | 4 | never chosen, may be rejected |" in section
    assert "| near-duplicate prompts (MinHash LSH, Jaccard >= 0.8) | 1 | counted, kept |" in section
    assert f"| prompts overlapping `{tmp_path / 'eval.csv'}` | 1 | dropped from both datasets |" in section
    assert "| pairs where the longer answer is chosen | 80% | signal only |" in section


@pytest.mark.parametrize(
    ("scores", "keep_ties", "pairs", "repicked", "dropped"),
    [
        ([5, 3, 1], False, [(1, 2)], 0, 2),  # (0, 1) and (0, 2) would choose the truncated 0
        ([3, 3, 1], True, [(1, 0), (1, 2)], 1, 1),  # the tie turns round: 0 is rejected instead
    ],
)
def test_all_pairs_never_choose_truncated(scores, keep_ties, pairs, repicked, dropped):
    comps = [comp(i, f"a{i}", s, "length" if i == 0 else "stop") for i, s in enumerate(scores)]
    st = BinarizeStats()
    got = binarize_prompt(
        row("p", "q", comps), "uf", BinarizeSpec(rule="all-pairs", keep_ties=keep_ties), None, st
    )
    assert [(int(p.chosen[0]["content"][1]), int(p.rejected[0]["content"][1])) for p in got] == pairs
    assert (st.truncated_chosen_repicked, st.truncated_chosen_dropped) == (repicked, dropped)
