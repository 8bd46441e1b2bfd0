"""`rounds:` in a recipe: how many on-policy rounds, which prompts each round gets, where the trained
policy is served, and (for an external policy endpoint) the command that loads new weights there."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class RoundsSpec(BaseModel):
    model_config = ConfigDict(extra="forbid")

    count: int = Field(default=2, ge=1, le=100, description="rounds `rlaif iterate` runs (--rounds)")
    prompts_per_round: int | None = Field(
        default=None, ge=1, description="fresh prompts per round; default: the pool after eval // count"
    )
    same_prompts: bool = Field(default=False, description="every round answers the same prompts")
    eval_prompts: int = Field(default=8, ge=1, description="held-out prompts for the win rates")
    eval_max_tokens: int = Field(default=96, ge=1, description="answer length on the held-out prompts")
    port: int = Field(default=8766, ge=1, le=65535, description="local server of the trained policies")
    seed: int = Field(default=0, description="seed of the prompt split")
    reload_command: str | None = Field(
        default=None,
        description="external policy only: a command run before each round >= 2 that makes the endpoint "
        "serve the new weights; {model} = the trained folder, {name} = its name@hash",
    )
