"""DPO on `binarized/train_prefs` (evaluated on `test_prefs`) with TRL's DPOTrainer."""

from __future__ import annotations

from pathlib import Path

from trainers.common import (
    continue_adapter,
    device_args,
    finish,
    load_model,
    load_split,
    peft_config,
    preference_accuracy,
    staged_output,
    trained_model,
)  # fmt: skip
from trainers.configs import DPOTrainConfig

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


def train(config: DPOTrainConfig) -> Path:
    """Train with DPO; writes the model + tokenizer, metrics.json (accuracy before/after) and curves.png."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    train_ds = load_split(config.dataset, "train_prefs", PAIR_COLUMNS).select_columns(PAIR_COLUMNS)
    eval_ds = load_split(config.dataset, "test_prefs", PAIR_COLUMNS, allow_empty=True).select_columns(
        PAIR_COLUMNS
    )
    model, tok = load_model(config, AutoModelForCausalLM)
    model = continue_adapter(model, config)  # a previous round's adapter, trained on
    probe = eval_ds if len(eval_ds) else train_ds
    before = preference_accuracy(model, tok, probe, config.max_length)
    with staged_output(config.output) as tmp:
        args = DPOConfig(output_dir=str(tmp), beta=config.beta, max_length=config.max_length,
                         eval_strategy="no", **device_args(config))  # fmt: skip
        trainer = DPOTrainer(model=model, args=args, train_dataset=train_ds,
                             eval_dataset=eval_ds if len(eval_ds) else None, processing_class=tok,
                             peft_config=peft_config(config))  # fmt: skip
        trainer.train()
        eval_metrics = trainer.evaluate() if len(eval_ds) else {}
        trained = trained_model(trainer, config)
        after = preference_accuracy(trained, tok, probe, config.max_length)
        finish(tmp, trainer, tok, config, "dpo", model=trained, extra={
            "train_pairs": len(train_ds), "eval_pairs": len(eval_ds), "beta": config.beta,
            "preference_accuracy_before": before, "preference_accuracy_after": after,
            "eval_rewards_accuracy": eval_metrics.get("eval_rewards/accuracies"),
            "eval_rewards_margin": eval_metrics.get("eval_rewards/margins"),
            "probe_split": "test_prefs" if len(eval_ds) else "train_prefs",
        })  # fmt: skip
    return Path(config.output)
