"""Every trainer's config, declared once: the recipe's `train:` section and `rlaif train`'s options are
derived from these models (no torch or TRL import here, so reading a recipe stays fast)."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class TrainConfig(BaseModel):
    """Fields every trainer takes; each method's config adds its own (beta, kl_coef, ...)."""

    model_config = ConfigDict(extra="forbid", protected_namespaces=())

    model: str = Field(default="smollm2-135m-instruct", description="model folder, name or hub id")
    dataset: str = Field(description="a build output folder (OUT) or its `binarized` folder")
    output: str = Field(description="folder the trained model, metrics.json and curves.png go to")
    max_steps: int = Field(default=10, ge=1)
    batch_size: int = Field(default=4, ge=1)
    gradient_accumulation_steps: int = Field(default=1, ge=1)
    learning_rate: float = Field(default=5e-6, gt=0)
    max_length: int = Field(default=256, ge=16)
    lora: bool = Field(default=False, description="train LoRA adapters (peft) instead of all weights")
    lora_r: int = Field(default=16, ge=1)
    lora_alpha: int | None = Field(default=None, ge=1, description="LoRA scaling alpha (default 2 x lora_r)")
    lora_dropout: float = Field(default=0.0, ge=0, lt=1)
    lora_target_modules: str = Field(
        default="all-linear", description="comma-separated module names, or all-linear"
    )
    lora_adapter: str | None = Field(
        default=None, description="with lora: go on training this adapter folder (a previous round's)"
    )
    save_adapter: bool = Field(
        default=False, description="with lora: save the adapter alone, not merged into the model"
    )
    seed: int = 0
    trust_remote_code: bool = False


class SFTTrainConfig(TrainConfig):
    learning_rate: float = 2e-5


class DPOTrainConfig(TrainConfig):
    beta: float = Field(default=0.1, gt=0, description="KL strength toward the reference model")
    learning_rate: float = 5e-6


class RewardTrainConfig(TrainConfig):
    use_margin: bool = Field(default=False, description="pass the `margin` column to the loss")
    learning_rate: float = 1e-5


class PPOTrainConfig(TrainConfig):
    reward_model: str | None = Field(default=None, description="folder written by `rlaif train reward`")
    kl_coef: float = Field(default=0.05, ge=0)
    response_length: int = Field(default=24, ge=1)
    learning_rate: float = 3e-6


METHOD_CONFIGS: dict[str, type[TrainConfig]] = {
    "sft": SFTTrainConfig, "dpo": DPOTrainConfig, "reward": RewardTrainConfig, "ppo": PPOTrainConfig,
}  # fmt: skip
RUN_FIELDS = ("dataset", "output")  # set by the run or the command line, never by a recipe's `train:`


def method_fields(method: str) -> dict[str, object]:
    """The fields a recipe's `train:` (or `rlaif train METHOD`) may set for a method."""
    return {k: f for k, f in METHOD_CONFIGS[method].model_fields.items() if k not in RUN_FIELDS}
