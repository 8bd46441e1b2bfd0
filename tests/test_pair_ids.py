"""Property test: a built dataset names each preference pair once. Samples with the same text (a small
policy at low temperature often writes one answer twice) must not give two rows with one `pair_id`."""

from __future__ import annotations

import tempfile
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.dataset.binarize import binarize_prompt
from flows.dataset.build import ShardFiles, build
from flows.dataset.schema import binarized_features, uf_features
from flows.recipe import BinarizeSpec

TEXTS = ("alpha", "beta", "gamma")  # few texts: the same answer is drawn twice often


@st.composite
def prompts(draw: Any) -> list[dict[str, Any]]:
    rows = []
    for p in range(draw(st.integers(1, 4))):
        n = draw(st.integers(2, 5))
        comps = [{"sample_index": k, "model": "m", "response": draw(st.sampled_from(TEXTS)),
                  "finish_reason": "stop", "scores": {"uf": float(draw(st.integers(1, 5)))}}
                 for k in range(n)]  # fmt: skip
        rows.append({"prompt_id": f"p{p}", "prompt": f"q{p}", "messages": [{"role": "user", "content": f"q{p}"}],
                     "completions": comps, "pairwise_verdicts": []})  # fmt: skip
    return rows


@settings(max_examples=60, deadline=None, derandomize=True, suppress_health_check=[HealthCheck.too_slow])
@given(rows=prompts(), rule=st.sampled_from(["all-pairs", "best-vs-random-lower", "best-vs-worst"]))
def test_each_pair_is_written_once_and_repeats_are_a_named_drop(rows, rule):
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp) / "shard"
        folder.mkdir()
        schema = uf_features([], ["uf"], with_provenance=False).arrow_schema
        pq.write_table(pa.Table.from_pylist(rows, schema=schema), folder / "rows.parquet")
        pq.write_table(
            pa.Table.from_pylist([], schema=binarized_features().arrow_schema), folder / "cpairs.parquet"
        )
        files = [
            ShardFiles(rows_path=str(folder / "rows.parquet"), cpairs_path=str(folder / "cpairs.parquet"))
        ]
        spec = BinarizeSpec(rule=rule, test_fraction=0.0)
        res, _ = build(
            Path(tmp) / "out", files, spec, "uf", uf_features([], ["uf"]).arrow_schema, {"policy": "m"}
        )
        written = pq.read_table(
            Path(tmp) / "out" / "parquet" / "binarized" / "train_prefs.parquet"
        ).to_pylist()
    ids = [r["pair_id"] for r in written]
    assert len(ids) == len(set(ids)), f"a pair_id twice: {sorted(ids)}"
    same = [(r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"]) for r in written]
    assert len(same) == len(set(same))  # no training example twice
    judged = res.ledger.pairs["judge"]
    assert judged.closes() and judged.kept == len(written)  # every candidate: written or a named drop


@settings(max_examples=300, deadline=None, derandomize=True)
@given(
    rows=prompts(), rule=st.sampled_from(["best-vs-random-lower", "best-vs-worst"]), keep_ties=st.booleans()
)
def test_best_vs_rules_reject_another_text_when_there_is_one(rows, rule, keep_ties):
    """Two samples with one text: the rule rejects an answer that differs from the chosen one whenever
    one scored lower (or tied, with `keep_ties`); an identical pair would only be linted away."""
    spec = BinarizeSpec(rule=rule, keep_ties=keep_ties, test_fraction=0.0)
    for row in rows:
        for p in binarize_prompt(row, "uf", spec):
            chosen = p.chosen[0]["content"]
            if p.rejected[0]["content"] == chosen:
                others = [c for c in row["completions"] if c["response"] != chosen]
                assert not any(c["scores"]["uf"] < p.score_chosen or keep_ties and c["scores"]["uf"] == p.score_chosen
                               for c in others), f"{row['completions']} -> {chosen!r} over itself"  # fmt: skip
