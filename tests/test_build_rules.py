"""Build rules: constitution pairs obey keep_ties / min_margin (bug H); a crash while the outputs are
swapped in never leaves a build that looks finished (bug J)."""

from __future__ import annotations

import asyncio
import os
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from datasets import load_from_disk

from flows.dataset.binarize import PairRow
from flows.dataset.build import ShardFiles, build
from flows.dataset.rows import PromptResult, extra_pairs
from flows.dataset.schema import binarized_features, uf_features
from flows.recipe import BinarizeSpec
from judges.constitution_judge import ConstitutionConfig, ConstitutionJudge, Label, Labeller
from judges.contract import Prompt, as_completions

MSG = [{"role": "user", "content": "q"}]


def label(winner: str, p_x: float | None, x: str = "x-text", y: str = "y-text") -> PairRow:
    """The pair a constitutional label of (x, y) makes: the winner (x on a tie) is chosen with
    P(chosen) = p_x for x, 1 - p_x for y (a hard label: 1; a tie: 0.5) and margin 2 P(chosen) - 1."""
    p = p_x if p_x is not None else {"x": 1.0, "y": 0.0, "tie": 0.5}[winner]
    pc = 0.5 if winner == "tie" else (p if winner == "x" else 1 - p)
    chosen, rejected = (y, x) if winner == "y" else (x, y)
    return PairRow(prompt_id="p", prompt=MSG, chosen=[{"role": "assistant", "content": chosen}],
                   rejected=[{"role": "assistant", "content": rejected}], score_chosen=pc, score_rejected=1 - pc,
                   margin=2 * pc - 1, p_chosen=None if p_x is None else (p_x if winner == "x" else 1 - p_x),
                   chosen_model="m", rejected_model="m", origin="constitution", judge="constitution:label",
                   principle_id="p1", principle_sha256="s")  # fmt: skip


def test_constitution_labels_carry_their_margin_and_side(tmp_path, monkeypatch):
    """The constitution judge turns its labels into pairs (the build's input) with the right side and margin."""
    const = tmp_path / "c.yaml"
    const.write_text('{"name": "c", "principles": [{"id": "p1", "critique": "c", "revision": "r", '
                     '"comparison": "Which is better?"}]}')  # fmt: skip
    scripted = [Label(principle_id="p1", principle_sha256="s", winner=w, p_x=p, consistent=w != "tie")
                for w, p in [("y", 0.2), ("x", None), ("tie", 0.5)]]  # fmt: skip

    async def scripted_label(self, prompt, x, y, principle):  # noqa: ANN001, ANN202
        return scripted[["x-text", "x2", "x3"].index(x)]

    monkeypatch.setattr(Labeller, "label", scripted_label)
    judge = ConstitutionJudge(ConstitutionConfig(constitution=str(const), mode="label"))
    comps = as_completions(["x-text", "y-text", "x2", "y2", "x3", "y3"], model="m")
    prompt = Prompt(prompt_id="p", prompt="q", messages=MSG)
    judged = asyncio.run(judge.judge(prompt, comps))
    pairs = extra_pairs(PromptResult(prompt=prompt, completions=comps, judged={"constitution": judged}))
    assert [p.chosen[0]["content"] for p in pairs] == ["y-text", "x2", "x3"]
    assert [p.rejected[0]["content"] for p in pairs] == ["x-text", "y2", "y3"]
    assert [round(p.margin, 6) for p in pairs] == [0.6, 1.0, 0.0]  # P(chosen) 0.8 -> margin 0.6
    assert [p.p_chosen for p in pairs] == [pytest.approx(0.8), None, 0.5]
    assert {p.origin for p in pairs} == {"constitution"} and {p.judge for p in pairs} == {
        "constitution:label"
    }
    # what the build is given for these labels is what the tests below write by hand
    hand = [
        label(w, px, x, y)
        for (w, px), x, y in zip(
            [("y", 0.2), ("x", None), ("tie", 0.5)], ["x-text", "x2", "x3"], ["y-text", "y2", "y3"]
        )
    ]
    assert pairs == hand


def _shard(tmp_path, cpairs: list[dict]) -> list[ShardFiles]:
    folder = tmp_path / "shard"
    folder.mkdir(exist_ok=True)
    pq.write_table(pa.Table.from_pylist([], schema=uf_features([], [], with_provenance=False).arrow_schema),
                   folder / "rows.parquet")  # fmt: skip
    rows = [{**p.model_dump(), "messages": MSG + p.chosen} for p in cpairs]
    pq.write_table(
        pa.Table.from_pylist(rows, schema=binarized_features().arrow_schema), folder / "cpairs.parquet"
    )
    return [ShardFiles(rows_path=str(folder / "rows.parquet"), cpairs_path=str(folder / "cpairs.parquet"))]


@pytest.mark.parametrize(
    ("keep_ties", "min_margin", "kept", "ties_dropped", "below_margin"),
    [(False, 0.0, 2, 1, 0), (True, 0.0, 3, 0, 0), (False, 0.5, 1, 1, 1), (True, 0.5, 1, 0, 2)],
)
def test_constitution_pairs_follow_keep_ties_and_min_margin(tmp_path, keep_ties, min_margin, kept,
                                                            ties_dropped, below_margin):  # fmt: skip
    labels = [
        label("x", 0.6),
        label("y", 0.0, "x2", "y2"),
        label("tie", None, "x3", "y3"),
    ]  # margins 0.2, 1.0, 0.0
    files = _shard(tmp_path, labels)
    spec = BinarizeSpec(keep_ties=keep_ties, constitution_min_margin=min_margin, test_fraction=0.0)
    res, _ = build(tmp_path / "out", files, spec, None, uf_features([], []).arrow_schema, {"policy": "m"})
    assert res.constitution_pairs == kept == res.pairs["train_prefs"]
    assert (res.stats.ties_dropped, res.stats.below_margin) == (ties_dropped, below_margin)
    acc = res.ledger.pairs["constitution"]
    assert (acc.given, acc.kept) == (3, kept) and acc.closes()


def test_judge_min_margin_is_not_applied_to_constitution_pairs(tmp_path):
    """`min_margin` is in the ranking judge's score units (UltraFeedback: up to 4); constitution
    margins are 0-1. A judge margin of 1.5 used to drop every constitution pair."""
    labels = [label("x", 0.9), label("y", 0.0, "x2", "y2")]  # margins 0.8 and 1.0
    files = _shard(tmp_path, labels)
    spec = BinarizeSpec(min_margin=1.5, test_fraction=0.0)
    res, _ = build(tmp_path / "out", files, spec, None, uf_features([], []).arrow_schema, {"policy": "m"})
    assert res.constitution_pairs == 2 and res.stats.below_margin == 0
    strict = BinarizeSpec(min_margin=1.5, constitution_min_margin=0.9, test_fraction=0.0)
    res, _ = build(tmp_path / "out2", files, strict, None, uf_features([], []).arrow_schema, {"policy": "m"})
    assert res.constitution_pairs == 1 and res.ledger.pairs["constitution"].dropped == {"below min_margin": 1}


def test_the_same_constitution_pair_twice_is_written_once_and_counted(tmp_path):
    """Two samples with one text get the same revision: one pair, the repeat a named drop."""
    files = _shard(tmp_path, [label("x", 0.9), label("x", 0.9), label("x", 0.9, "x2")])
    res, _ = build(tmp_path / "out", files, BinarizeSpec(test_fraction=0.0), None,
                   uf_features([], []).arrow_schema, {"policy": "m"})  # fmt: skip
    acc = res.ledger.pairs["constitution"]
    assert res.pairs["train_prefs"] == 2 == acc.kept and acc.given == 3
    assert acc.dropped == {"repeat of an earlier pair (samples with the same text)": 1}


def test_crash_while_swapping_outputs_leaves_no_finished_marker(tmp_path, monkeypatch):
    out = tmp_path / "out"
    out.mkdir()
    labels = [label("x", 0.9)]
    files = _shard(tmp_path, labels)
    schema = uf_features([], []).arrow_schema
    build(out, files, BinarizeSpec(test_fraction=0.0), None, schema, {"policy": "old"})
    assert (out / "build.json").exists()

    swapped: list[str] = []
    real_replace = os.replace

    def crash_after_first_folder(src, dst):  # noqa: ANN001
        if Path(dst).parent == out and Path(dst).name in ("binarized", "ultrafeedback", "parquet"):
            if swapped:  # the first output folder is in, the next one is not
                raise OSError("simulated crash between the output folders")
            swapped.append(Path(dst).name)
        return real_replace(src, dst)

    monkeypatch.setattr(os, "replace", crash_after_first_folder)
    with pytest.raises(OSError, match="simulated crash"):
        build(out, files, BinarizeSpec(test_fraction=0.0), None, schema, {"policy": "new"})
    assert swapped == ["binarized"]  # new binarized beside old ultrafeedback/parquet
    assert not (out / "build.json").exists()  # old/new mix: not marked finished
    monkeypatch.setattr(os, "replace", real_replace)
    res, _ = build(out, files, BinarizeSpec(test_fraction=0.0), None, schema, {"policy": "new"})
    assert not res.cached and (out / "build.json").exists()
    assert load_from_disk(str(out / "binarized"))["train_prefs"].num_rows == 1  # readable again
    assert load_from_disk(str(out / "ultrafeedback")).num_rows == 0
