"""SFT on `binarized/train_sft` (the best-of-N completion per prompt) with TRL's SFTTrainer."""

from __future__ import annotations

from pathlib import Path

from trainers.common import (
    continue_adapter,
    device_args,
    finish,
    load_model,
    load_split,
    peft_config,
    staged_output,
)
from trainers.configs import SFTTrainConfig


def train(config: SFTTrainConfig) -> Path:
    """Instruction-tune on the best completions; writes the model, metrics.json and curves.png."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    ds = load_split(config.dataset, "train_sft", ["messages"]).select_columns(["messages"])
    model, tok = load_model(config, AutoModelForCausalLM)
    model = continue_adapter(model, config)  # a previous round's adapter, trained on
    with staged_output(config.output) as tmp:
        args = SFTConfig(output_dir=str(tmp), max_length=config.max_length, **device_args(config))
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=peft_config(config))  # fmt: skip
        trainer.train()
        finish(tmp, trainer, tok, config, "sft", {"train_rows": len(ds)})
    return Path(config.output)
