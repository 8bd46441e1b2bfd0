"""PPO with `trl.experimental.ppo` (TRL 1.12): policy + reference from the policy model (with `lora`: a
LoRA adapter, the reference is the adapter it started from), the reward model from `reward.py`
(normalised), value model initialised from the reward model."""

from __future__ import annotations

from pathlib import Path

import torch

from serving.errors import ModelError
from serving.reward_scoring import read_normalization
from trainers.common import (
    continue_adapter,
    device_args,
    finish,
    load_model,
    load_split,
    model_path,
    peft_config,
    staged_output,
)
from trainers.configs import PPOTrainConfig


class NormalizedHead(torch.nn.Module):
    """The reward head with the saved mean/std folded in (TRL calls `model.score(hidden)`)."""

    def __init__(self, head: torch.nn.Module, mean: float, std: float) -> None:
        super().__init__()
        self.head, self.mean, self.std = head, mean, std

    def forward(self, hidden: torch.Tensor) -> torch.Tensor:
        return (self.head(hidden) - self.mean) / self.std


def train(config: PPOTrainConfig) -> Path:
    """Run PPO; writes the policy + tokenizer, metrics.json (reward and KL curves) and curves.png."""
    import os

    from transformers import AutoModelForCausalLM, AutoModelForSequenceClassification

    os.environ.setdefault("TRL_EXPERIMENTAL_SILENCE", "1")  # known: PPO lives in trl.experimental in 1.12
    from trl.experimental.ppo import PPOConfig, PPOTrainer

    if not config.reward_model:
        raise ModelError(
            "PPO needs a reward model: train one with `rlaif train reward` and pass --reward-model"
        )
    rm_path = Path(config.reward_model)
    if not (rm_path / "config.json").exists():
        raise ModelError(f"{rm_path}: not a reward model folder (no config.json)")
    prompts = load_split(config.dataset, "train_prefs", ["prompt"]).select_columns(["prompt"])
    policy, tok = load_model(config, AutoModelForCausalLM, padding_side="left")
    ref = None  # with lora: the base with the adapter off, or the frozen "ref" copy of a continued adapter
    if not config.lora:
        ref = AutoModelForCausalLM.from_pretrained(
            model_path(config.model), trust_remote_code=config.trust_remote_code
        )
    policy = continue_adapter(policy, config, reference=True)
    adapters = {"model_adapter_name": "default", "ref_adapter_name": "ref"} if config.lora_adapter else {}

    def encode(row: dict) -> dict:
        ids = tok.apply_chat_template(row["prompt"], add_generation_prompt=True, tokenize=True,
                                      return_dict=True)["input_ids"]  # fmt: skip
        return {"input_ids": ids[-config.max_length :]}

    train_ds = prompts.map(encode, remove_columns=["prompt"])
    reward = AutoModelForSequenceClassification.from_pretrained(str(rm_path), num_labels=1)
    value = AutoModelForSequenceClassification.from_pretrained(str(rm_path), num_labels=1)
    for m in (reward, value):
        m.config.pad_token_id = tok.pad_token_id
    mean, std = read_normalization(rm_path)
    reward.score = NormalizedHead(reward.score, mean, std)
    dev = device_args(config)
    dev.pop("max_steps")
    with staged_output(config.output) as tmp:
        args = PPOConfig(
            output_dir=str(tmp), total_episodes=config.max_steps * config.batch_size, num_mini_batches=1,
            response_length=config.response_length, kl_coef=config.kl_coef, stop_token="eos",
            num_sample_generations=0, missing_eos_penalty=1.0, **adapters, **dev,
        )  # fmt: skip
        trainer = PPOTrainer(args=args, processing_class=tok, model=policy, ref_model=ref, reward_model=reward,
                             train_dataset=train_ds, value_model=value, peft_config=peft_config(config))  # fmt: skip
        trainer.train()
        tok.padding_side = "right"
        hist = trainer.state.log_history
        finish(tmp, trainer, tok, config, "ppo", model=trainer.policy_model, extra={
            "prompts": len(train_ds), "kl_coef": config.kl_coef, "reward_model": str(rm_path),
            "reward_curve": [e.get("objective/rlhf_reward") for e in hist if "objective/rlhf_reward" in e],
            "kl_curve": [e.get("objective/kl") for e in hist if "objective/kl" in e],
        })  # fmt: skip
    return Path(config.output)
