"""Per-round time outside requests and training: LoRA-adapter rounds against full-folder rounds.

Runs `recipes/iterate-lora.yaml` twice in one process, at demo size: as shipped (each round's adapter is
loaded into the running base server) and without `lora:` (each round trains a full model that gets its own
vLLM, as `recipes/iterate-demo.yaml` does). Each round's `timing.overhead_s` is its wall time minus the
shard engine (generation and judging), training, and the held-out answer and judge requests: server
starts and switches, adapter loads, flow, gate and evaluation set-up, build and card. Prints both, their
ratio, and the vLLM starts of each run. Run alone: `.venv/bin/python bench/rounds_lora.py [--rounds 2]`.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

from common import ROOT, LoadSampler, loadavg, warm_prefect

from flows.recipe import Recipe, load_recipe
from flows.rounds.loop import RoundResult, iterate
from serving.vllm import VllmServer, server_models


def variants(policy_port: int, rounds_port: int) -> dict[str, Recipe]:
    recipe = load_recipe(ROOT / "recipes" / "iterate-lora.yaml")
    recipe = recipe.model_copy(update={"policy": recipe.policy.model_copy(update={"port": policy_port})})
    assert recipe.rounds is not None and recipe.train is not None
    rounds = recipe.rounds.model_copy(update={"port": rounds_port})
    full_train = recipe.train.model_copy(update={"lora": None, "learning_rate": 5.0e-6})
    return {
        "adapter": recipe.model_copy(update={"rounds": rounds}),
        "full": recipe.model_copy(update={"rounds": rounds, "train": full_train}),
    }


def run(name: str, recipe: Recipe, out: Path, count: int) -> tuple[list[RoundResult], int, float]:
    starts, t0 = VllmServer.starts, time.monotonic()
    with LoadSampler() as load:
        done = iterate(recipe, out, count=count, recipe_dir=ROOT / "recipes")
    print(f"{name}: {count} rounds in {time.monotonic() - t0:.0f} s, {VllmServer.starts - starts} vLLM starts "
          f"(base server included), {load.line()}", flush=True)  # fmt: skip
    for r in done:
        t = r.timing
        assert t is not None
        print(f"  round {r.round}: wall {t.wall_s:.1f} s = generation+judging {t.generate_s:.1f} + training "
              f"{t.train_s:.1f} + held-out requests {t.eval_requests_s:.1f} + outside {t.overhead_s:.1f} "
              f"(serving {t.serve_s:.1f} s: {t.server_starts} starts, {t.adapter_loads} adapter loads)", flush=True)  # fmt: skip
    return done, VllmServer.starts - starts, statistics.fmean(r.timing.overhead_s for r in done if r.timing)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--rounds", type=int, default=2)
    ap.add_argument("--policy-port", type=int, default=8768, help="the base policy's server (both runs)")
    ap.add_argument("--rounds-port", type=int, default=8769, help="the full-folder rounds' own server")
    args = ap.parse_args()
    for port in (args.policy_port, args.rounds_port):  # a reused server would hide the starts measured
        if server_models(f"http://127.0.0.1:{port}/v1") is not None:
            raise SystemExit(f"port {port}: a server already answers there; stop it or pass another port")
    print(loadavg(), flush=True)
    warm_prefect()
    mean = {}
    with tempfile.TemporaryDirectory(prefix="rlaif-bench-rounds-") as tmp:
        for name, recipe in variants(args.policy_port, args.rounds_port).items():
            _, _, mean[name] = run(name, recipe, Path(tmp) / name, args.rounds)
    print(f"mean per-round time outside requests and training: adapter {mean['adapter']:.1f} s, "
          f"full folder {mean['full']:.1f} s; adapter / full = {mean['adapter'] / mean['full']:.2f}")  # fmt: skip


if __name__ == "__main__":
    main()
