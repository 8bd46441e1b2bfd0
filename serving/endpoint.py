"""An OpenAI-compatible endpoint and the client's settings, and the typed shape of a chat answer
(choices, token counts) that every stage reads."""

from __future__ import annotations

import os
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from serving.errors import EndpointError


class Endpoint(BaseModel):
    """One OpenAI-compatible endpoint. `api_key_env` is the *name* of an environment variable."""

    model_config = ConfigDict(extra="forbid")

    base_url: str = Field(description="e.g. http://127.0.0.1:8765/v1 or https://api.openai.com/v1")
    model: str = Field(description="model name the endpoint serves")
    api_key_env: str | None = Field(default=None, description="env var holding the API key")
    max_concurrency: int = Field(default=32, ge=1, description="requests in flight at once")
    mode: Literal["online", "batch"] = Field(
        default="online",
        description="batch: requests go through the provider's batch API (/v1/files, /v1/batches), at its batch "
        "price, answered within 24 h (serving/batch.py)",
    )
    batch_window_s: float = Field(default=10.0, gt=0, description="batch mode: a batch is cut this long "
                                  "after its first request was queued")  # fmt: skip
    batch_max_requests: int = Field(default=50_000, ge=1, le=50_000, description="batch mode: or as soon "
                                    "as this many requests are queued (OpenAI takes 50,000 per batch)")  # fmt: skip
    batch_poll_s: float = Field(default=30.0, gt=0, description="batch mode: seconds between status polls")

    def api_key(self) -> str | None:
        if not self.api_key_env:
            return None
        key = os.environ.get(self.api_key_env)
        if key is None:
            raise EndpointError(
                f"endpoint {self.base_url}: environment variable {self.api_key_env} is not set"
            )
        return key


class ClientConfig(BaseModel):
    model_config = ConfigDict(extra="forbid")

    timeout_s: float = Field(default=600.0, gt=0, description="per-request timeout (CPU is slow)")
    max_retries: int = Field(default=5, ge=0)
    backoff_base_s: float = Field(default=0.5, ge=0)
    backoff_max_s: float = Field(default=30.0, ge=0)
    rest_after_failures: int = Field(default=5, ge=1, description="consecutive failures to rest")
    rest_s: float = Field(default=30.0, ge=0, description="how long a failing endpoint rests")
    adaptive: bool = Field(
        default=True,
        description="AIMD per endpoint: halve the concurrency on HTTP 429, add a slot back per window of answers",
    )
    max_rate_limited: int = Field(
        default=50,
        ge=1,
        description="429s in a row for one request, with no answer from its endpoint in between, before giving up",
    )


class Counters(BaseModel):
    requests: int = 0
    failures: int = 0
    retries: int = 0
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0
    completion_tokens: int = 0
    wall_s: float = 0.0
    rate_limited: int = 0  # answers that were HTTP 429 (each one retried, never a skip)
    batches: int = 0  # batches submitted (batch mode); `requests` counts their lines


class Choice(BaseModel):
    text: str
    finish_reason: str | None = None
    logprobs: list[dict[str, Any]] | None = None  # content entries: token, logprob, top_logprobs


class ChatResult(BaseModel):
    choices: list[Choice]
    prompt_tokens: int = 0
    cached_prompt_tokens: int = 0  # prompt tokens the server answered from its prefix cache
    completion_tokens: int = 0
    endpoint: str = ""


class RequestRejected(EndpointError):
    """The endpoint refused this request for good (4xx other than 429/408), e.g. prompt too long."""

    def __init__(self, message: str, status: int) -> None:
        super().__init__(message)
        self.status = status
