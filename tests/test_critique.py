"""Constitutional critique/revision and labels on the real server; work tied to each principle's text."""

from __future__ import annotations

import json

import httpx
import pyarrow.parquet as pq
import pytest

from flows.dataset.prompts import iter_prompts
from flows.engine.manifest import write_manifest
from flows.engine.shard import JudgeRun, ShardPlan, run_shard
from flows.recipe import Sampling
from judges.constitution_file import load_constitution
from judges.constitution_judge import ConstitutionConfig
from judges.registry import make_judge
from serving.endpoint import Endpoint
from tests.helpers import journal_lines, write_jsonl
from tests.stubs import FaultProxy

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


def without_logprobs(target: str):
    """A FaultProxy hook: the real server answers, the answer loses its logprobs (an endpoint that has
    none), so labels are decided by the letters alone."""
    http = httpx.Client(timeout=600)

    def reply(req: dict, n: int):
        r = http.post(target.rstrip("/") + "/chat/completions", json=req)
        body = r.json()
        for c in body.get("choices") or []:
            c["logprobs"] = None
        return r.status_code, body, {}

    return reply


def test_critique_label_and_edit_one_principle(vllm_server, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Describe a cat in one sentence."},
                                              {"prompt": "Say something about rain."}])  # fmt: skip
    out = tmp_path / "run"
    ref = write_manifest(iter_prompts(str(data)), {}, out, 256, str(data)).shards[0]
    cpath = tmp_path / "c.yaml"
    cpath.write_text(CONSTITUTION)
    spec = ConstitutionConfig(constitution=str(cpath), mode="both", principles="all", max_tokens=32)
    server = FaultProxy(vllm_server.base_url).start()  # counts what reaches the server
    endpoint = Endpoint(base_url=server.base_url, model=vllm_server.model_name, max_concurrency=32)

    def plan(out_dir, critique, critique_endpoint) -> ShardPlan:
        judge = make_judge(critique)  # reads the constitution now: its fingerprint covers the file's text
        run = JudgeRun(spec=critique, endpoints=[critique_endpoint], template_sha=judge.fingerprint())  # fmt: skip
        # answers cut at max_tokens stay eligible: this test counts critiques and labels, not cuts
        return ShardPlan(out_dir=str(out_dir), policy_model="m", policy_endpoints=[endpoint],
                         sampling=Sampling(n=2, max_tokens=24), judges=[run],
                         allow_truncated_chosen=True)  # fmt: skip

    def tally(res) -> dict:  # noqa: ANN001 - the constitution judge's figures in the shard's result
        return res.judges["constitution"]

    def run():  # the plain stage function, no Prefect; requests counted where they arrive
        before = server.calls
        res = run_shard(ref, plan(out, spec, endpoint))
        sent = server.calls - before
        if not res.cached:  # the engine's own count agrees with the server's
            assert sent == sum(s.sent for s in res.stages.values())
        return res, sent

    try:
        first, sent = run()
        shas = {p.id: p.sha256() for p in load_constitution(cpath).principles}
        # candidate pairs: completions x principles + pairs x principles
        assert tally(first)["candidates"] == 4 * 2 + 2 * 2
        assert first.stages["generate"].sent == 4  # 2 prompts x 2 samples
        assert sent - 4 == first.stages["critique"].sent == 2 * 8 + 2 * 4
        assert len(journal_lines(out, "critique")) == 2 * 8 + 2 * 4
        per = tally(first)["per_principle"]
        assert set(per) == {"kind", "short"} and sum(p["critiques"] for p in per.values()) == 8
        pairs = pq.read_table(first.cpairs_path).to_pylist()
        labels = [p for p in pairs if p["judge"] == "constitution:label"]
        assert len(labels) == tally(first)["labels"] == 4  # ties too (margin 0): build applies keep_ties
        assert tally(first)["labels_soft"] == 4  # soft labels from logprobs
        for p in labels:  # the two orders' probabilities, averaged, decide even when the letters disagree
            assert p["p_chosen"] is not None and p["p_chosen"] >= 0.5
            assert p["margin"] == pytest.approx(2 * p["p_chosen"] - 1)
        decided = sum(p["margin"] != 0 for p in labels)  # labels that name a winner count as pairs too
        kept = sum(p.get("pairs", 0) for p in per.values()) - decided
        assert sum(p["judge"] == "constitution:critique" for p in pairs) == kept
        for p in pairs:
            assert p["origin"] == "constitution" and p["principle_sha256"] == shas[p["principle_id"]]
            assert p["chosen"][0]["role"] == "assistant" and p["messages"][-1] == p["chosen"][0]

        again, sent_again = run()
        assert again.cached and sent_again == 0  # nothing reached the server

        # Letters only (an endpoint without logprobs), on the same completions: a label is a tie
        # (margin 0) exactly when its two orders disagree, and names a winner when they agree.
        letters_out = tmp_path / "letters"
        journal = letters_out / "shards" / ref.name / "journal.jsonl"
        journal.parent.mkdir(parents=True)
        journal.write_text("".join(json.dumps(r) + "\n" for r in journal_lines(out, "generate")))
        with FaultProxy(vllm_server.base_url, without_logprobs(vllm_server.base_url)) as letters:
            ep = Endpoint(base_url=letters.base_url, model=vllm_server.model_name, max_concurrency=32)
            before = server.calls
            res = run_shard(ref, plan(letters_out, spec.model_copy(update={"mode": "label"}), ep))
            assert server.calls == before  # the completions were replayed from the copied journal
        assert letters.calls == res.stages["critique"].sent == 2 * 4  # 2 pairs x 2 principles x 2 orders
        lab = [p for p in pq.read_table(res.cpairs_path).to_pylist() if p["judge"] == "constitution:label"]
        assert len(lab) == tally(res)["labels"] == 4 and tally(res).get("labels_soft", 0) == 0
        assert all(p["p_chosen"] is None and p["margin"] in (0.0, 1.0) for p in lab)
        disagree = tally(res)["labels"] - tally(res).get("labels_consistent", 0)
        assert sum(p["margin"] == 0 for p in lab) == disagree, (tally(res), [p["margin"] for p in lab])

        cpath.write_text(CONSTITUTION.replace("to be shorter", "to be much shorter"))
        edited, sent_edit = run()
        assert not edited.cached
        # only the edited principle's revision requests are new: its critique and label requests are unchanged
        assert sent_edit == tally(edited)["per_principle"]["short"]["critiques"] == 4
        assert edited.stages["generate"].sent == 0
    finally:
        server.stop()
