"""Constitutional critique/revision and labels on the real server; work tied to each principle's text."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from flows.engine.manifest import write_manifest
from flows.engine.shard import ShardPlan, run_shard
from flows.prompts import iter_prompts
from flows.recipe import CritiqueSpec, Sampling
from judges.constitution import load_constitution
from tests.helpers import journal_records, write_jsonl

CONSTITUTION = """name: test
version: 1
principles:
  - id: kind
    critique: Is the answer unkind in any way? Say how.
    revision: Rewrite the answer to be kinder. Reply with the new answer only.
    comparison: Which answer is kinder?
  - id: short
    critique: Is the answer longer than it needs to be?
    revision: Rewrite the answer to be shorter. Reply with the new answer only.
    comparison: Which answer is more concise?
"""


def test_critique_label_and_edit_one_principle(policy_endpoint, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Describe a cat in one sentence."},
                                              {"prompt": "Say something about rain."}])  # fmt: skip
    out = tmp_path / "run"
    ref = write_manifest(iter_prompts(str(data)), {}, out, 256, str(data)).shards[0]
    cpath = tmp_path / "c.yaml"
    cpath.write_text(CONSTITUTION)
    spec = CritiqueSpec(constitution=str(cpath), mode="both", principles="all", max_tokens=32)

    def run():  # the plain stage function, no Prefect
        c = load_constitution(cpath)
        plan = ShardPlan(out_dir=str(out), policy_model="m", policy_endpoints=[policy_endpoint],
                         sampling=Sampling(n=2, max_tokens=24), critique=spec,
                         critique_endpoints=[policy_endpoint], constitution_path=str(cpath),
                         constitution_sha=c.sha256)  # fmt: skip
        res = run_shard(ref, plan)
        return res, 0 if res.cached else res.stages["critique"]["sent"]

    first, sent = run()
    shas = {p.id: p.sha256() for p in load_constitution(cpath).principles}
    assert first.critique["rows"] == 4 * 2 + 2 * 2  # completions x principles + pairs x principles
    assert sent == 2 * 8 + 2 * 4 == len(journal_records(out, "critique"))
    per = first.critique["per_principle"]
    assert set(per) == {"kind", "short"} and sum(p["critiques"] for p in per.values()) == 8
    pairs = pq.read_table(first.cpairs_path).to_pylist()
    labels = [p for p in pairs if p["judge"] == "constitution:label"]
    assert len(labels) == first.critique["labels"] == 4  # ties too (margin 0): build applies keep_ties
    ties = first.critique["labels"] - first.critique["labels_consistent"]  # the two orders disagree
    for p in labels:
        if p["p_chosen"] is None:  # letters only: a disagreement is a tie (margin 0)
            assert p["margin"] in (0.0, 1.0)
        else:  # soft label: the two orders' probabilities, averaged, decide even when the letters disagree
            assert p["p_chosen"] >= 0.5 and p["margin"] == pytest.approx(2 * p["p_chosen"] - 1)
    assert sum(p["p_chosen"] is None and p["margin"] == 0 for p in labels) <= ties
    decided = sum(p["margin"] != 0 for p in labels)  # labels that name a winner count as pairs too
    kept = sum(p.get("pairs", 0) for p in per.values()) - decided
    assert sum(p["judge"] == "constitution:critique" for p in pairs) == kept
    for p in pairs:
        assert p["origin"] == "constitution" and p["principle_sha256"] == shas[p["principle_id"]]
        assert p["chosen"][0]["role"] == "assistant" and p["messages"][-1] == p["chosen"][0]
    assert first.critique["labels_soft"] == 4  # soft labels from logprobs

    again, sent_again = run()
    assert again.cached and sent_again == 0

    cpath.write_text(CONSTITUTION.replace("to be shorter", "to be much shorter"))
    edited, sent_edit = run()
    assert not edited.cached
    # only the edited principle's revision requests are new: its critique and label requests are unchanged
    assert sent_edit == edited.critique["per_principle"]["short"]["critiques"] == 4
    assert edited.stages["generate"]["sent"] == 0
