"""How close the demo's prefix-cache hit rate is to what its request shapes allow, from one real run.

Runs `recipes/demo.yaml` (no gate, no training) on a fresh local vLLM through the real CLI, in this
process, recording every chat request the run sends (messages, answer, the server's cached-token
count) in the order they start. Then replays them through an ideal prefix cache: unbounded, 32-token
blocks like the server's, a request finds every whole block that any request before it computed
(its prompt from the moment it starts, its answer once it ends) and recomputes at least its last
token. Per request family it prints the prompt tokens, vLLM's hit rate and the ideal cache's.

The ideal figure is the ceiling for the run's request shapes: no scheduling, ordering or server
setting can cache a token no earlier request computed. `--what-if` replays the same requests with the
critique's few-shot examples removed (the critique then continues the policy's own conversation, so
the generation's blocks serve it), the one reshaping that reuses work across families.

Run: `.venv/bin/python bench/prefix_ceiling.py [--port 8791]` (about 6 min on the 2-core CPU, the
server's start included).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
from collections import defaultdict
from pathlib import Path
from typing import Any

import yaml
from common import ROOT, LoadSampler, loadavg

BLOCK = 32  # serving/vllm.py starts the CPU server with --block-size 32 (`--block` replays with another)


class Recorder:
    """Wraps `LLMClient.chat`: each request's messages when it starts, its answer when it ends."""

    def __init__(self) -> None:
        self.events: list[tuple[str, int, Any]] = []
        self.requests: list[dict[str, Any]] = []
        self.lock = threading.Lock()

    def install(self) -> None:
        from serving.client import LLMClient

        original = LLMClient.chat
        rec = self

        async def chat(client: Any, messages: list[dict[str, str]], **kw: Any) -> Any:
            with rec.lock:
                idx = len(rec.requests)
                rec.requests.append({"messages": messages})
                rec.events.append(("start", idx, None))
            result = await original(client, messages, **kw)
            with rec.lock:
                rec.requests[idx].update(text=result.choices[0].text, prompt_tokens=result.prompt_tokens,
                                         cached=result.cached_prompt_tokens)  # fmt: skip
                rec.events.append(("end", idx, None))
            return result

        LLMClient.chat = chat  # type: ignore[method-assign]


def family(messages: list[dict[str, str]]) -> str:
    first = messages[0]["content"]
    if first.startswith("You are grading answers"):
        return "judge:ultrafeedback"
    if first.startswith("Two AI assistants"):
        return "judge:pairwise"
    return "critique" if len(messages) > 1 else "generate"


def without_shots(messages: list[dict[str, str]]) -> list[dict[str, str]]:
    """A critique or revision request minus the constitution's few-shot turns (the last 3 or 5 stay)."""
    keep = 3 if len(messages) % 6 == 3 else 5
    return messages[-keep:]


class IdealCache:
    """Whole-block prefix cache with no eviction; hashes chain as vLLM's do."""

    def __init__(self) -> None:
        self.blocks: set[int] = set()

    def hashes(self, ids: list[int]) -> list[int]:
        out, h = [], 0
        for i in range(0, len(ids) - len(ids) % BLOCK, BLOCK):
            h = hash((h, tuple(ids[i : i + BLOCK])))
            out.append(h)
        return out

    def hit(self, ids: list[int]) -> int:
        n = 0
        for h in self.hashes(ids):
            if h not in self.blocks:
                break
            n += 1
        return min(n * BLOCK, (len(ids) - 1) // BLOCK * BLOCK)

    def add(self, ids: list[int]) -> None:
        self.blocks.update(self.hashes(ids))


def replay(rec: Recorder, tok: Any, shape: str) -> dict[str, list[int]]:
    """Per family [requests, prompt tokens, ideal hits] replaying the recorded order."""
    cache, ids, out = IdealCache(), {}, defaultdict(lambda: [0, 0, 0])
    for kind, idx, _ in rec.events:
        r = rec.requests[idx]
        fam = family(r["messages"])
        msgs = without_shots(r["messages"]) if shape == "no-shots" and fam == "critique" else r["messages"]
        if kind == "start":
            text = tok.apply_chat_template(msgs, add_generation_prompt=True, tokenize=False)
            ids[idx] = tok(text, add_special_tokens=False)["input_ids"]
            row = out[fam]
            row[0] += 1
            row[1] += len(ids[idx])
            row[2] += cache.hit(ids[idx])
            cache.add(ids[idx])
        else:
            cache.add(ids[idx] + tok(r["text"], add_special_tokens=False)["input_ids"])
    return dict(out)


def demo_recipe(tmp: Path, port: int) -> Path:
    recipe = yaml.safe_load((ROOT / "recipes" / "demo.yaml").read_text())
    recipe["policy"]["port"] = port
    recipe["critique"]["constitution"] = str(ROOT / "constitutions" / "harmless.yaml")
    for key in ("gate", "train"):
        recipe.pop(key, None)
    path = tmp / "demo.yaml"
    path.write_text(yaml.safe_dump(recipe))
    return path


def main() -> None:
    global BLOCK
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--port", type=int, default=8791, help="a free port: the run starts its own vLLM there")
    ap.add_argument("--record", type=Path, default=Path("/tmp/prefix_ceiling.json"),
                    help="where the recorded requests are written (and read by --replay)")  # fmt: skip
    ap.add_argument("--replay", action="store_true", help="no run: replay the requests --record holds")
    ap.add_argument("--block", type=int, default=BLOCK,
                    help="the ideal cache's block in tokens (16: vLLM's GPU default; 1: a token-level cache)")  # fmt: skip
    args = ap.parse_args()
    BLOCK = args.block
    from transformers import AutoTokenizer

    from flows.cli import main as cli
    from serving.models import resolve_model
    from serving.vllm import server_models

    rec = Recorder()
    if args.replay:
        saved = json.loads(args.record.read_text())
        rec.events, rec.requests, vllm_rate, load_line = (
            [tuple(e) for e in saved["events"]],
            saved["requests"],
            saved["vllm"],
            saved["load"],
        )
    else:
        if server_models(f"http://127.0.0.1:{args.port}/v1") is not None:
            raise SystemExit(
                f"port {args.port}: a server already answers there; stop it or pass another --port"
            )
        rec.install()
        print(f"before: {loadavg()}")
        with tempfile.TemporaryDirectory() as tmp, LoadSampler() as load:
            out = Path(tmp) / "out"
            rc = cli(["run", str(demo_recipe(Path(tmp), args.port)), "--out", str(out)])
            if rc:
                raise SystemExit(f"the demo run failed (exit {rc})")
            vllm_rate = json.loads((out / "summary.json").read_text())["prefix_cache"]
        load_line = load.line()
        args.record.write_text(json.dumps({"events": rec.events, "requests": rec.requests, "vllm": vllm_rate,
                                           "load": load_line}))  # fmt: skip
    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    measured: dict[str, list[int]] = defaultdict(lambda: [0, 0])
    for r in rec.requests:
        m = measured[family(r["messages"])]
        m[0] += r["prompt_tokens"]
        m[1] += r["cached"]
    ideal, what_if = replay(rec, tok, "as-run"), replay(rec, tok, "no-shots")
    print(
        f"demo recipe, {len(rec.requests)} requests, one run on a fresh server; {load_line}; ideal cache: {BLOCK}-token blocks"
    )
    print(f"{'family':<22}{'requests':>9}{'prompt tok':>12}{'vLLM hit':>10}{'ideal hit':>11}"
          f"{'| no-shots tok':>15}{'ideal hit':>11}")  # fmt: skip
    tot = [0, 0, 0, 0, 0]
    for fam, (n, pt, hit) in ideal.items():
        mpt, mhit = measured[fam]
        _, wpt, whit = what_if[fam]
        tot = [a + b for a, b in zip(tot, (mpt, mhit, pt, hit, 0))]
        print(f"{fam:<22}{n:>9}{mpt:>12,}{mhit / mpt:>10.0%}{hit / pt:>11.0%}{wpt:>15,}{whit / wpt:>11.0%}")
    wpt_all = sum(v[1] for v in what_if.values())
    whit_all = sum(v[2] for v in what_if.values())
    print(f"{'all':<22}{len(rec.requests):>9}{tot[0]:>12,}{tot[1] / tot[0]:>10.0%}{tot[3] / tot[2]:>11.0%}"
          f"{wpt_all:>15,}{whit_all / wpt_all:>11.0%}")  # fmt: skip
    print(f"vLLM /metrics for the run: {json.dumps(vllm_rate)}; our token count vs the server's: "
          f"{tot[2]:,} vs {tot[0]:,}")  # fmt: skip


if __name__ == "__main__":
    main()
    sys.stdout.flush()
    os._exit(0)  # vLLM's triton bindings print "leaked" lines at interpreter exit (as `rlaif` avoids)
