"""SFT on `binarized/train_sft` (the best-of-N completion per prompt) with TRL's SFTTrainer."""

from __future__ import annotations

from pathlib import Path

from trainers.common import (
    TrainConfig,
    device_args,
    load_split,
    load_tokenizer,
    model_path,
    peft_config,
    staged_output,
    write_metrics,
)  # fmt: skip


class SFTTrainConfig(TrainConfig):
    learning_rate: float = 2e-5


def train(config: SFTTrainConfig) -> Path:
    """Instruction-tune on the best completions; writes the model, metrics.json and curves.png."""
    from transformers import AutoModelForCausalLM
    from trl import SFTConfig, SFTTrainer

    ds = load_split(config.dataset, "train_sft", ["messages"]).select_columns(["messages"])
    path = model_path(config.model)
    tok = load_tokenizer(path, config.trust_remote_code)
    model = AutoModelForCausalLM.from_pretrained(path, trust_remote_code=config.trust_remote_code)
    with staged_output(config.output) as tmp:
        args = SFTConfig(output_dir=str(tmp), max_length=config.max_length, **device_args(config))
        trainer = SFTTrainer(model=model, args=args, train_dataset=ds, processing_class=tok,
                             peft_config=peft_config(config))  # fmt: skip
        trainer.train()
        trained = trainer.model.merge_and_unload() if config.lora else trainer.model
        trained.save_pretrained(tmp)
        tok.save_pretrained(tmp)
        write_metrics(tmp, "sft", trainer.state.log_history, {"train_rows": len(ds)})
    return Path(config.output)
