"""vLLM's own batch runner against the server path, for a local model, each including its model start.

The same N chat requests (MT-bench prompts x `--n` seeded samples, `max_tokens` 64: a generation stage)
go (1) through a freshly started `vllm serve` of the bundled model with rlaif's client at the recipe's
default concurrency (32, AIMD), and (2) as one batch JSONL (the lines batch mode uploads) through
`python -m vllm.entrypoints.openai.run_batch` (serving/batch_local.py: same engine arguments, no HTTP).
Prints each side's model start, request span and total, the tokens each made, and total(server) /
total(run_batch): above 1.00 the batch runner is faster.

Run: `.venv/bin/python bench/batch_vs_server.py [--prompts 64 --n 4 --max-tokens 64 --port 8792
--concurrency 32 --order server-first]` (~5 min on an idle 2-core CPU; run it alone).
"""

from __future__ import annotations

import argparse
import asyncio
import tempfile
import threading
import time
from pathlib import Path

from common import MT_BENCH, LoadSampler, bench_prompts, fresh_server, loadavg

from flows.engine.stages import sample_seed
from serving.batch import LineError, custom_id
from serving.batch_local import run_local_batch
from serving.client import LLMClient, chat_body
from serving.endpoint import ChatResult, ClientConfig, Endpoint
from serving.models import served_name

TEMPERATURE = 0.8


def requests(prompts: int, n: int, max_tokens: int) -> list[dict]:
    """Chat bodies (without the model) as the generation stage sends them: n seeded samples a prompt."""
    out = []
    for p in bench_prompts(prompts):
        for i in range(n):
            out.append(chat_body(p.messages, temperature=TEMPERATURE, top_p=1.0, max_tokens=max_tokens,
                                 seed=sample_seed(0, p.prompt_id, i)))  # fmt: skip
    return out


def server_side(bodies: list[dict], port: int, concurrency: int) -> dict[str, float]:
    """Start a fresh server, send every request with rlaif's client, stop it."""
    t0 = time.monotonic()
    server = fresh_server(port).start()
    try:
        ready = time.monotonic()

        async def send() -> tuple[int, int]:
            client = LLMClient([Endpoint(base_url=server.base_url, model=server.model_name,
                                         max_concurrency=concurrency)], ClientConfig())  # fmt: skip
            try:
                res = await asyncio.gather(*(client.chat(**b) for b in bodies))
            finally:
                await client.aclose()
            return sum(r.completion_tokens for r in res), sum(r.prompt_tokens for r in res)

        completion, prompt = asyncio.run(send())
        done = time.monotonic()
    finally:
        server.stop()
    end = time.monotonic()
    return {"start_s": ready - t0, "requests_s": done - ready, "to_last_answer_s": done - t0,
            "total_s": end - t0, "completion_tokens": completion, "prompt_tokens": prompt}  # fmt: skip


def batch_side(bodies: list[dict], work: Path) -> dict[str, float]:
    """The batch JSONL through vLLM's batch runner (model start, every line, exit); the model is up when
    the runner starts reading the batch (its log says so)."""
    model = served_name(None)
    lines = [(custom_id(b | {"model": model}, None), b | {"model": model}) for b in bodies]
    log_path, marks, stop = work / "run_batch.log", {}, threading.Event()

    def watch() -> None:
        while not stop.wait(0.2):
            text = log_path.read_text(errors="replace") if log_path.exists() else ""
            if "ready" not in marks and "Reading batch from" in text:
                marks["ready"] = time.monotonic()
            if "Writing outputs" in text:
                marks["written"] = time.monotonic()
                return

    watcher = threading.Thread(target=watch, daemon=True)
    t0 = time.monotonic()
    watcher.start()
    try:
        answers = run_local_batch(lines, work, log_path=log_path)
    finally:
        stop.set()
        watcher.join()
    end = time.monotonic()
    bad = [a for a in answers.values() if isinstance(a, LineError)]
    if bad or len(answers) != len(lines):
        raise SystemExit(f"run_batch answered {len(answers) - len(bad)} of {len(lines)} lines: {bad[:1]}")
    ok = [a for a in answers.values() if isinstance(a, ChatResult)]
    ready, written = marks.get("ready", t0), marks.get("written", end)
    return {"start_s": ready - t0, "requests_s": written - ready, "to_last_answer_s": written - t0,
            "total_s": end - t0, "completion_tokens": sum(a.completion_tokens for a in ok),
            "prompt_tokens": sum(a.prompt_tokens for a in ok)}  # fmt: skip


def show(name: str, r: dict[str, float], load: str) -> None:
    print(f"{name:<10} start {r['start_s']:6.1f}s  requests {r['requests_s']:6.1f}s  to last answer "
          f"{r['to_last_answer_s']:6.1f}s  total {r['total_s']:6.1f}s  tokens {int(r['prompt_tokens']):,} prompt + "
          f"{int(r['completion_tokens']):,} completion  ({load})")  # fmt: skip


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--prompts", type=int, default=64)
    ap.add_argument("--n", type=int, default=4, help="seeded samples per prompt")
    ap.add_argument("--max-tokens", type=int, default=64)
    ap.add_argument("--port", type=int, default=8792, help="a free port for the server side")
    ap.add_argument(
        "--concurrency", type=int, default=32, help="the client's max_concurrency (recipe default)"
    )
    ap.add_argument("--order", choices=("server-first", "batch-first"), default="server-first")
    args = ap.parse_args()
    bodies = requests(args.prompts, args.n, args.max_tokens)
    source = MT_BENCH.name if MT_BENCH.exists() else "recipes/prompts/default.jsonl"
    print(f"{len(bodies)} requests ({args.prompts} prompts of {source} x {args.n} samples, max_tokens "
          f"{args.max_tokens}); {loadavg()}")  # fmt: skip
    results: dict[str, tuple[dict[str, float], str]] = {}
    with tempfile.TemporaryDirectory(prefix="rlaif-batch-bench-") as tmp:
        sides = ["server", "run_batch"] if args.order == "server-first" else ["run_batch", "server"]
        for side in sides:
            with LoadSampler() as load:
                r = (server_side(bodies, args.port, args.concurrency) if side == "server"
                     else batch_side(bodies, Path(tmp)))  # fmt: skip
            results[side] = (r, load.line())
            show(side, *results[side])
    s, b = results["server"][0], results["run_batch"][0]
    print(f"total server/run_batch: {s['total_s'] / b['total_s']:.2f}  (to last answer "
          f"{s['to_last_answer_s'] / b['to_last_answer_s']:.2f}; requests alone {s['requests_s'] / b['requests_s']:.2f}, "
          f"start alone {s['start_s'] / b['start_s']:.2f})")  # fmt: skip


if __name__ == "__main__":
    main()
