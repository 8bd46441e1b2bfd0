"""`RewardModelJudge`: scores completions locally with a reward model trained by `rlaif train reward`,
so a second round of data can be labelled by the model trained on the first."""

from __future__ import annotations

import asyncio
import math
import threading
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, field_validator

from judges.contract import Completion, Judge, JudgeConfig, Judgement, Preference, Prompt


class RewardModelConfig(JudgeConfig):
    type: Literal["reward_model"] = "reward_model"
    reward_model: str = Field(description="folder written by `rlaif train reward`")
    max_length: int = Field(default=512, ge=16, description="tokens of prompt + answer scored")

    @field_validator("reward_model")
    @classmethod
    def _is_model_folder(cls, path: str) -> str:
        if not (Path(path).expanduser() / "config.json").is_file():
            raise ValueError(
                f"{path} is not a model folder (no config.json); train one with `rlaif train reward`"
            )
        return path


class RewardModelJudge(Judge):
    """Loads the sequence-classification model on first use; scores are normalised (mean 0, std 1
    over the reward model's training responses)."""

    type = "reward_model"
    config_class = RewardModelConfig
    uses_endpoint = False

    def __init__(
        self, config: RewardModelConfig, client: Any = None, allow_truncated_chosen: bool = False
    ) -> None:
        super().__init__(config, client, allow_truncated_chosen)
        self.cfg = config

    @property
    def scorer(self) -> Any:
        """Loaded on first use, once per process (every shard's judge shares it)."""
        return _scorer(str(Path(self.cfg.reward_model).expanduser().resolve()), self.cfg.max_length)

    def requests_per_prompt(self, n: int) -> int:
        return 0

    def extra_files(self) -> list[Path]:
        names = ("config.json", "metrics.json", "reward_normalization.json", "model.safetensors")
        return [p for n in names if (p := Path(self.cfg.reward_model).expanduser() / n).exists()]

    def model_name(self, endpoint_models: list[str]) -> str:
        return self.cfg.reward_model

    def score(self, messages: list[dict[str, str]], responses: list[str]) -> list[float]:
        return list(self.scorer.score([messages] * len(responses), responses))

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        responses = [c.response for c in completions]
        scores = await asyncio.to_thread(self.score, prompt.messages, responses) if responses else []
        return Judgement(scores=list(scores))

    async def prefer(self, prompt: Prompt, first: str, second: str) -> Preference:
        """P(first better) = sigmoid(raw score difference): the Bradley-Terry probability the reward
        model was trained on (scores are normalised, so the difference is scaled back by their std)."""
        a, b = await asyncio.to_thread(self.score, prompt.messages, [first, second])
        z = max(-50.0, min(50.0, (a - b) * self.scorer.std))
        winner = "tie" if a == b else "x" if a > b else "y"
        return Preference(winner=winner, p_x=1 / (1 + math.exp(-z)))


_SCORERS: dict[tuple[str, int], Any] = {}
_SCORERS_LOCK = threading.Lock()  # scoring threads start together: load once, import transformers once


def _scorer(path: str, max_length: int) -> Any:
    """One loaded model per (folder, length) per process, shared by every shard."""
    from serving.reward_scoring import RewardScorer

    key = (path, max_length)
    with _SCORERS_LOCK:
        if key not in _SCORERS:
            _SCORERS[key] = RewardScorer(path, max_length)
        return _SCORERS[key]
