"""`RewardModelJudge`: scores completions locally with a reward model trained by `rlaif train reward`,
so a second round of data can be labelled by the model trained on the first."""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel

from serving.reward_scoring import RewardScorer


class RewardScore(BaseModel):
    score: float  # normalised: mean 0, std 1 over the reward model's training responses


class RewardModelJudge:
    """Loads the sequence-classification model once; `judge` scores every completion of a prompt."""

    def __init__(self, model_dir: str | Path, max_length: int = 512) -> None:
        self.scorer = RewardScorer(model_dir, max_length)

    def judge(self, messages: list[dict[str, str]], responses: list[str]) -> list[RewardScore]:
        scores = self.scorer.score([messages] * len(responses), responses)
        return [RewardScore(score=s) for s in scores]
