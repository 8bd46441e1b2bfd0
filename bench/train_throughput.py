"""Training throughput on SmolLM2-135M (batch 4, max_length 256): DPO and reward-model samples/s.

Uses a preference set built from real MT-bench prompts with long and short answers. Prints both
figures and their ratio. Run: `.venv/bin/python bench/train_throughput.py [--steps 6]`.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

from common import bench_prompts

from flows.dataset.binarize import PairRow
from trainers import dpo, reward


def dataset(folder: Path, n: int) -> Path:
    pairs = []
    for p in bench_prompts(n):
        long = ("Here is a careful answer. " + p.prompt + " ") * 6
        pairs.append(PairRow(prompt_id=p.prompt_id, prompt=p.messages,
                             chosen=[{"role": "assistant", "content": long}],
                             rejected=[{"role": "assistant", "content": "I am not sure."}], score_chosen=5.0,
                             score_rejected=1.0, margin=4.0, chosen_model="a", rejected_model="b",
                             origin="judge", judge="bench"))  # fmt: skip
    import datasets

    from flows.dataset.schema import binarized_features

    rows = [{**p.model_dump(), "messages": p.prompt + p.chosen} for p in pairs]
    cut = max(1, len(rows) // 10)
    feats = binarized_features()
    datasets.DatasetDict({
        "train_prefs": datasets.Dataset.from_list(rows[cut:], features=feats),
        "test_prefs": datasets.Dataset.from_list(rows[:cut], features=feats),
    }).save_to_disk(str(folder / "binarized"))  # fmt: skip
    return folder


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--steps", type=int, default=6)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        data = dataset(Path(tmp) / "data", 48)
        figures = {}
        for name, module, cfg in (
            ("dpo", dpo, dpo.DPOTrainConfig),
            ("reward", reward, reward.RewardTrainConfig),
        ):
            t0 = time.monotonic()
            out = module.train(cfg(dataset=str(data), output=f"{tmp}/{name}", max_steps=args.steps, batch_size=4,
                                   max_length=256))  # fmt: skip
            wall = time.monotonic() - t0
            m = json.loads((out / "metrics.json").read_text())
            final = next(e for e in reversed(m["log_history"]) if "train_samples_per_second" in e)
            figures[name] = float(final["train_samples_per_second"])
            print(f"{name}: {figures[name]:.2f} samples/s in the trainer loop "
                  f"({args.steps} steps x 4; whole call incl. load/save {wall:.0f}s)")  # fmt: skip
    print(f"reward/dpo samples-per-second ratio: {figures['reward'] / figures['dpo']:.2f}")


if __name__ == "__main__":
    main()
