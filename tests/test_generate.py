"""Generate against the real vLLM server: shards with every field, and a re-run that costs nothing."""

from __future__ import annotations

import json
from pathlib import Path

from flows.generate import generate_flow
from flows.prompts import load_prompts
from flows.recipe import Sampling
from serving.client import ClientConfig, shared_client
from tests.helpers import metric, write_jsonl

FIELDS = {"prompt_id", "prompt", "messages", "source", "sample_index", "model", "response", "sampling",
          "finish_reason", "prompt_tokens", "completion_tokens"}  # fmt: skip


def test_generate_writes_shards_and_rerun_sends_nothing(vllm_server, policy_endpoint, tmp_path):
    prompts = write_jsonl(tmp_path / "p.jsonl", [
        {"prompt": "Name a primary colour."}, {"prompt": "What is 2 + 2?"},
        {"prompt": "Say hello in French."}, {"prompt": "Give one word that rhymes with cat."},
    ])  # fmt: skip
    ps = load_prompts(str(prompts))
    sampling = Sampling(n=2, max_tokens=16, temperature=0.7, seed=1)
    cfg = ClientConfig()
    out = tmp_path / "run"
    kwargs = dict(prompts=ps.rows, endpoints=[policy_endpoint], model="smollm2-135m-instruct",
                  sampling=sampling, out_dir=str(out), batch_size=3, client_config=cfg)  # fmt: skip

    res = generate_flow(**kwargs)
    assert res.prompts == 4 and res.rows == 8 and len(res.shards) == 2
    rows = [r for s in res.shards for r in json.loads(Path(s).read_text())["rows"]]
    assert {(r["prompt_id"], r["sample_index"]) for r in rows} == {
        (p.prompt_id, i) for p in ps.rows for i in range(2)
    }
    for r in rows:
        assert FIELDS <= set(r)
        assert r["finish_reason"] in ("stop", "length")
        assert 0 < r["completion_tokens"] <= 16 and r["prompt_tokens"] > 0
        assert r["sampling"]["max_tokens"] == 16 and r["sampling"]["seed"] is not None
    assert not list(out.rglob("*.tmp"))

    client = shared_client([policy_endpoint], cfg)
    before_client = client.counters.requests
    before_server = metric(vllm_server, "vllm:request_success_total")
    again = generate_flow(**kwargs)
    assert client.counters.requests == before_client
    assert metric(vllm_server, "vllm:request_success_total") == before_server
    assert again.rows == 8 and sorted(again.shards) == sorted(res.shards)


def test_prompt_longer_than_context_is_skipped_and_counted(policy_endpoint, tmp_path):
    huge = "word " * 3000  # > 2048 tokens, under max_prompt_chars
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": huge}, {"prompt": "Say yes."}, {"prompt": "  "}])
    ps = load_prompts(str(prompts), max_prompt_chars=100_000)
    assert ps.skipped == {"empty": 1}
    res = generate_flow(prompts=ps.rows, endpoints=[policy_endpoint], model="m",
                        sampling=Sampling(n=1, max_tokens=8), out_dir=str(tmp_path / "o"),
                        batch_size=4, client_config=ClientConfig())  # fmt: skip
    assert res.skipped == {"too_long": 1}
    assert res.rows == 1
