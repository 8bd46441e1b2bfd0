"""`Price`: what an endpoint charges per million tokens (a recipe's `price:`), and the cost of a token count."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class Price(BaseModel):
    """What an endpoint charges, in USD per million tokens."""

    model_config = ConfigDict(extra="forbid")

    input: float = Field(ge=0, description="USD per 1M prompt tokens")
    cached_input: float | None = Field(
        default=None, ge=0, description="per 1M cached prompt tokens; default input"
    )
    output: float = Field(ge=0, description="USD per 1M completion tokens")
    batch: float = Field(
        default=0.5, ge=0, le=1, description="multiplier on every rate for requests answered through a batch "
        "API (an endpoint's `mode: batch`); OpenAI and Anthropic charge half",
    )  # fmt: skip

    def cost(self, prompt: int, cached: int, completion: int) -> float:
        cached_rate = self.input if self.cached_input is None else self.cached_input
        return ((prompt - cached) * self.input + cached * cached_rate + completion * self.output) / 1e6

    def for_mode(self, batch: bool) -> Price:
        """The price a stage pays: every rate times `batch` when its endpoints answer through batches."""
        if not batch:
            return self
        cached = None if self.cached_input is None else self.cached_input * self.batch
        return Price(input=self.input * self.batch, cached_input=cached, output=self.output * self.batch,
                     batch=1.0)  # fmt: skip
