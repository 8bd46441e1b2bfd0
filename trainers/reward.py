"""Reward model: `AutoModelForSequenceClassification` (one label) trained with TRL's RewardTrainer on
`train_prefs`, accuracy on `test_prefs`, scores normalised to mean 0 / std 1 over training responses."""

from __future__ import annotations

import json
import statistics
from pathlib import Path

from serving.reward_scoring import NORMALIZATION_FILE, conversation_text, raw_scores
from trainers.common import (
    device_args,
    finish,
    load_model,
    load_split,
    peft_config,
    staged_output,
    trained_model,
)  # fmt: skip
from trainers.configs import RewardTrainConfig


def pair_accuracy(model, tok, ds, max_length: int) -> float | None:  # noqa: ANN001
    if len(ds) == 0:
        return None
    chosen = raw_scores(model, tok, [conversation_text(tok, r["prompt"], r["chosen"][0]["content"]) for r in ds],
                        max_length)  # fmt: skip
    rejected = raw_scores(model, tok, [conversation_text(tok, r["prompt"], r["rejected"][0]["content"])
                                       for r in ds], max_length)  # fmt: skip
    return sum(1.0 if c > r else 0.5 if c == r else 0.0 for c, r in zip(chosen, rejected)) / len(ds)


def train(config: RewardTrainConfig) -> Path:
    """Train the reward model; writes it with its normalisation constants, metrics.json, curves.png."""
    from transformers import AutoModelForSequenceClassification

    cols = ["prompt", "chosen", "rejected"] + (["margin"] if config.use_margin else [])
    train_ds = load_split(config.dataset, "train_prefs", cols).select_columns(cols)
    test_ds = load_split(config.dataset, "test_prefs", cols, allow_empty=True).select_columns(cols)
    model, tok = load_model(config, AutoModelForSequenceClassification, num_labels=1)
    model.config.pad_token_id = tok.pad_token_id
    from trl import RewardConfig, RewardTrainer

    with staged_output(config.output) as tmp:
        args = RewardConfig(output_dir=str(tmp), max_length=config.max_length, **device_args(config))
        trainer = RewardTrainer(model=model, args=args, train_dataset=train_ds, processing_class=tok,
                                peft_config=peft_config(config, "SEQ_CLS"))  # fmt: skip
        trainer.train()
        trained = trained_model(trainer, config)
        texts = [
            conversation_text(tok, r["prompt"], r[k][0]["content"])
            for r in train_ds
            for k in ("chosen", "rejected")
        ]
        scores = raw_scores(trained, tok, texts, config.max_length)
        mean = statistics.fmean(scores)
        std = statistics.pstdev(scores) or 1.0
        test_acc = pair_accuracy(trained, tok, test_ds, config.max_length)
        train_acc = pair_accuracy(trained, tok, train_ds, config.max_length)
        (tmp / NORMALIZATION_FILE).write_text(json.dumps({"mean": mean, "std": std, "n": len(scores)}))
        finish(tmp, trainer, tok, config, "reward", model=trained, extra={
            "train_pairs": len(train_ds), "test_pairs": len(test_ds), "test_accuracy": test_acc,
            "train_accuracy": train_acc, "normalization": {"mean": mean, "std": std}, "use_margin": config.use_margin,
        })  # fmt: skip
    return Path(config.output)
