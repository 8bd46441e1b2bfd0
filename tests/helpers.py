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
    """A build output from hand-written shards: chosen = a correct sum stated politely, rejected = a
    wrong, curt one. Rated 5 vs 1 by a scripted 'ultrafeedback' judge shard. Easy to learn."""
    import json
    import random

    from flows.build import build
    from flows.recipe import BinarizeSpec, Recipe

    rng = random.Random(seed)
    gen_rows, judged = [], {}
    for k in range(n_prompts):
        a, b = rng.randint(1, 50), rng.randint(1, 50)
        pid = f"p{k:03d}"
        prompt = f"What is {a} + {b}?"
        good = f"Sure! {a} + {b} = {a + b}."
        bad = f"{a + b + rng.randint(1, 9)}"
        for i, text in enumerate((good, bad)):
            gen_rows.append({"prompt_id": pid, "prompt": prompt, "messages": [{"role": "user", "content": prompt}],
                             "source": "synthetic", "sample_index": i, "model": "scripted", "response": text,
                             "sampling": {"temperature": 0.0}, "finish_reason": "stop", "prompt_tokens": 5,
                             "completion_tokens": 5})  # fmt: skip
        ann = [
            {a2: {"rating": r, "rationale": "", "error": None} for a2 in ("helpfulness", "honesty")}
            for r in (5, 1)
        ]
        judged[pid] = {"sample_indices": [0, 1], "orders": {}, "requests": 2, "parse_failures": 0,
                       "completions": [{"annotations": x, "fine_grained_score": float(x["helpfulness"]["rating"])}
                                       for x in ann]}  # fmt: skip
    gen = out_dir / "generate" / "shard-synthetic.json"
    gen.parent.mkdir(parents=True, exist_ok=True)
    gen.write_text(json.dumps({"rows": gen_rows, "skipped": {}}))
    jdg = out_dir / "judge" / "ultrafeedback" / "shard-synthetic.json"
    jdg.parent.mkdir(parents=True, exist_ok=True)
    jdg.write_text(json.dumps({"type": "ultrafeedback", "endpoint_model": "scripted", "prompts": judged}))
    build(out_dir, [str(gen)], {"ultrafeedback": [str(jdg)]}, BinarizeSpec(test_fraction=0.25), Recipe())
    return out_dir


def free_port() -> int:
    """A local port nothing listens on (a closed port, or one to start a server on)."""
    import socket

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    port = s.getsockname()[1]
    s.close()
    return port
