"""DPO on `binarized/train_prefs` (evaluated on `test_prefs`) with TRL's DPOTrainer."""

from __future__ import annotations

from pathlib import Path

from pydantic import Field

from trainers.common import (
    TrainConfig,
    device_args,
    load_split,
    load_tokenizer,
    model_path,
    peft_config,
    preference_accuracy,
    staged_output,
    write_metrics,
)  # fmt: skip

PAIR_COLUMNS = ["prompt", "chosen", "rejected"]


class DPOTrainConfig(TrainConfig):
    beta: float = Field(default=0.1, gt=0, description="KL strength toward the reference model")
    learning_rate: float = 5e-6


def train(config: DPOTrainConfig) -> Path:
    """Train with DPO; writes the model + tokenizer, metrics.json (accuracy before/after) and curves.png."""
    from transformers import AutoModelForCausalLM
    from trl import DPOConfig, DPOTrainer

    train_ds = load_split(config.dataset, "train_prefs", PAIR_COLUMNS).select_columns(PAIR_COLUMNS)
    eval_ds = load_split(config.dataset, "test_prefs", PAIR_COLUMNS, allow_empty=True).select_columns(
        PAIR_COLUMNS
    )
    path = model_path(config.model)
    tok = load_tokenizer(path, config.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=config.trust_remote_code)
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
        trained = trainer.model.merge_and_unload() if config.lora else trainer.model
        after = preference_accuracy(trained, tok, probe, config.max_length)
        trained.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_metrics(tmp, "dpo", trainer.state.log_history, {
            "train_pairs": len(train_ds), "eval_pairs": len(eval_ds), "beta": config.beta,
            "preference_accuracy_before": before, "preference_accuracy_after": after,
            "eval_rewards_accuracy": eval_metrics.get("eval_rewards/accuracies"),
            "probe_split": "test_prefs" if len(eval_ds) else "train_prefs",
        })  # fmt: skip
    return Path(config.output)
