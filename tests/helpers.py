"""Small helpers shared by the tests."""

from __future__ import annotations

from pathlib import Path

MT_BENCH = Path(__file__).resolve().parents[2] / "shared" / "data" / "mt_bench_questions.jsonl"


def metric(server, name: str) -> float:
    """Sum of a Prometheus counter on the vLLM server (e.g. vllm:request_success_total)."""
    import httpx

    text = httpx.get(server.base_url.removesuffix("/v1") + "/metrics", timeout=10).text
    total = 0.0
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            total += float(line.rsplit(" ", 1)[1])
    return total


def write_jsonl(path: Path, rows: list[dict]) -> Path:
    import json

    path.write_text("".join(json.dumps(r) + "\n" for r in rows))
    return path


def make_tiny_model(folder: Path) -> Path:
    """A random 2-layer Llama (hidden 16) with the bundled SmolLM2 tokenizer: fast to train."""
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from serving.models import materialize_default_model

    tok = AutoTokenizer.from_pretrained(materialize_default_model())
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=16, intermediate_size=32, num_hidden_layers=2,
                      num_attention_heads=2, num_key_value_heads=1, max_position_embeddings=1024,
                      pad_token_id=tok.pad_token_id or tok.eos_token_id, bos_token_id=tok.bos_token_id,
                      eos_token_id=tok.eos_token_id, tie_word_embeddings=True)  # fmt: skip
    LlamaForCausalLM(cfg).save_pretrained(folder)
    tok.save_pretrained(folder)
    return folder


def synthetic_build(out_dir: Path, n_prompts: int = 48, seed: int = 0) -> Path:
    """A build output from hand-written rows: chosen = a correct sum stated politely, rejected = a
    wrong, curt one, rated 5 vs 1 by a scripted 'ultrafeedback' judge. Easy to learn."""
    import random

    import pyarrow as pa
    import pyarrow.parquet as pq

    from flows.dataset.build import ShardFiles, build
    from flows.dataset.schema import binarized_features, uf_features
    from flows.recipe import BinarizeSpec, Recipe

    rng = random.Random(seed)
    rows = []
    for k in range(n_prompts):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        prompt = f"What is {a} + {b}?"
        comps = []
        for i, (text, r) in enumerate(
            ((f"Sure! {a} + {b} = {a + b}.", 5), (f"{a + b + rng.randint(1, 9)}", 1))
        ):
            ann = {x: {"rating": r, "rationale": "", "error": None} for x in ("helpfulness", "honesty")}
            comps.append({"sample_index": i, "model": "scripted", "response": text, "finish_reason": "stop",
                          "sampling": {"temperature": 0.0}, "completion_tokens": 5, "annotations": ann,
                          "fine_grained_score": float(r), "scores": {"ultrafeedback": float(r)}})  # fmt: skip
        rows.append({"prompt_id": f"p{k:03d}", "prompt": prompt, "messages": [{"role": "user", "content": prompt}],
                     "source": "synthetic", "completions": comps, "pairwise_verdicts": []})  # fmt: skip
    feats = uf_features(["helpfulness", "honesty"], ["ultrafeedback"])
    shard = out_dir / "shards" / "synthetic"
    shard.mkdir(parents=True, exist_ok=True)
    pq.write_table(pa.Table.from_pylist(rows, schema=uf_features(["helpfulness", "honesty"], ["ultrafeedback"],
                                                                 with_provenance=False).arrow_schema),
                   shard / "rows.parquet")  # fmt: skip
    pq.write_table(
        pa.Table.from_pylist([], schema=binarized_features().arrow_schema), shard / "cpairs.parquet"
    )
    prov = {"policy": "scripted", "judges": ["ultrafeedback"], "recipe_sha256": Recipe().sha256()}
    files = [ShardFiles(rows_path=str(shard / "rows.parquet"), cpairs_path=str(shard / "cpairs.parquet"))]
    build(out_dir, files, BinarizeSpec(test_fraction=0.25), "ultrafeedback",
          feats.arrow_schema, prov)  # fmt: skip
    return out_dir


def journal_records(out: Path, stage: str | None = None) -> list[dict]:
    """Every journalled request of a run folder (optionally of one stage: generate, judge:KEY, critique)."""
    import json

    recs = []
    for j in sorted(out.glob("shards/*/journal.jsonl")):
        for line in j.read_text().splitlines():
            rec = json.loads(line)
            if stage is None or rec["s"] == stage:
                recs.append(rec)
    return recs


def uf_rows(out: Path) -> list[dict]:
    """The built UltraFeedback rows (from the Parquet copy)."""
    import pyarrow.parquet as pq

    return pq.read_table(out / "parquet" / "ultrafeedback" / "train.parquet").to_pylist()


def free_port() -> int:
    """A local port nothing listens on (a closed port, or one to start a server on)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port


def journal_lines(out: Path, stage: str | None = None) -> list[dict]:
    """The raw lines of a run folder's journals, every line as written (duplicates included, nothing
    deduped), optionally of one stage. Safe while a run appends: an unfinished last line (no newline
    yet, or torn by a kill -9) is left out, as `Journal` itself cuts it on reopen."""
    import json

    recs = []
    for j in sorted(out.glob("shards/*/journal.jsonl")):
        data = j.read_bytes()
        for line in data[: data.rfind(b"\n") + 1].splitlines():
            rec = json.loads(line)
            if stage is None or rec["s"] == stage:
                recs.append(rec)
    return recs


def wait_for(condition, timeout_s: float, what, interval_s: float = 0.05) -> None:
    """Poll `condition()` until it is true; fail naming `what` (a string, or a callable that says what
    was seen by then) after `timeout_s`. Make it generous: the deadline only bounds a hang, it must
    never decide the outcome on a busy machine."""
    import time

    deadline = time.monotonic() + timeout_s
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError(
                f"timed out after {timeout_s:.0f}s waiting for {what() if callable(what) else what}"
            )
        time.sleep(interval_s)
