"""Constitutional critique/revision and labels on the real server; cache tied to principle text."""

from __future__ import annotations

import json
from pathlib import Path

from flows.critique import critique_flow
from flows.generate import generate_flow
from flows.prompts import load_prompts
from flows.recipe import CritiqueSpec, Sampling
from judges.constitution import load_constitution
from serving.client import ClientConfig, shared_client
from tests.helpers import write_jsonl

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
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Describe a cat in one sentence."},
                                                 {"prompt": "Say something about rain."}])  # fmt: skip
    out = str(tmp_path / "run")
    cfg = ClientConfig()
    gen = generate_flow(prompts=load_prompts(str(prompts)).rows, endpoints=[policy_endpoint], model="m",
                        sampling=Sampling(n=2, max_tokens=24), out_dir=out, batch_size=2,
                        client_config=cfg)  # fmt: skip
    cpath = tmp_path / "c.yaml"
    cpath.write_text(CONSTITUTION)
    spec = CritiqueSpec(constitution=str(cpath), mode="both", principles="all", max_tokens=32)
    client = shared_client([policy_endpoint], cfg)

    def run():
        before = client.counters.requests
        res = critique_flow(gen_shards=gen.shards, spec=spec, constitution=load_constitution(cpath),
                            endpoints=[policy_endpoint], out_dir=out, client_config=cfg)  # fmt: skip
        return res, client.counters.requests - before

    first, sent = run()
    shas = {p.id: p.sha256() for p in load_constitution(cpath).principles}
    crits = [c for s in first.stage.shards for c in json.loads(Path(s).read_text())["critiques"]]
    labels = [lab for s in first.stage.shards for lab in json.loads(Path(s).read_text())["labels"]]
    assert len(crits) == 4 * 2 and len(labels) == 2 * 2  # completions x principles, pairs x principles
    assert sent == 2 * len(crits) + 2 * len(labels)
    for c in crits:
        assert c["principle_sha256"] == shas[c["principle_id"]]
        assert c["status"] in ("kept", "identical", "empty", "refusal")
        assert c["critique"] is not None and c["revision"] is not None
    for lab in labels:
        assert lab["p_x"] is not None and 0.0 <= lab["p_x"] <= 1.0  # soft label from logprobs
    pairs = first.pairs()
    kept = sum(c["status"] == "kept" for c in crits)
    assert sum(p.judge == "constitution:critique" for p in pairs) == kept
    for p in pairs:
        assert p.origin == "constitution" and p.principle_sha256 == shas[p.principle_id]

    again, sent_again = run()
    assert sent_again == 0

    cpath.write_text(CONSTITUTION.replace("to be shorter", "to be much shorter"))
    _, sent_edit = run()
    used_short = sum(c["principle_id"] == "short" for c in crits) + sum(
        x["principle_id"] == "short" for x in labels
    )
    assert sent_edit == 2 * used_short
