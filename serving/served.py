"""`ServedModel`: a model behind OpenAI-compatible endpoints, or `local` (the embedded vLLM server)."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from serving.config_files import field_error
from serving.endpoint import Endpoint
from serving.models import DEFAULT_MODEL, served_name
from serving.price import Price
from serving.vllm import DEFAULT_PORT


def check_model_ref(name: str | None) -> str | None:
    """A model reference that can be loaded later: the bundled name, a model folder, or a hub id
    'org/name'. Checked when the recipe is read, so a typo fails before any server starts."""
    if name is None or name == DEFAULT_MODEL:
        return name
    path = Path(name).expanduser()
    if path.exists():
        if not (path / "config.json").is_file():
            raise ValueError(f"{name} is not a model folder (no config.json)")
        return name
    if name.count("/") == 1 and not name.startswith((".", "/", "~")):
        return name  # a hub id: usable when the machine is online or the hub cache has it
    raise ValueError(f"model {name!r} does not exist (not a local folder, not a hub id 'org/name'; "
                     f"the bundled model is {DEFAULT_MODEL!r})")  # fmt: skip


class ServedModel(BaseModel):
    """A model behind one or more OpenAI-compatible endpoints, or `local` (the embedded vLLM)."""

    model_config = ConfigDict(extra="forbid")

    model: str = Field(default=DEFAULT_MODEL, description="model name, local folder or hub id")
    endpoints: Literal["local"] | list[Endpoint] = Field(default="local")
    port: int = Field(default=DEFAULT_PORT, ge=1, le=65535, description="port of the local server")
    max_concurrency: int = Field(default=32, ge=1, description="in-flight requests (local)")
    max_model_len: int = Field(default=2048, ge=128)
    trust_remote_code: bool = Field(default=False, description="let vLLM run the model repo's own code")
    price: Price | None = Field(default=None, description="USD per 1M tokens: {input, cached_input, output}")
    served_as: str | None = Field(default=None, description="name the local server serves it under "
                                  "(default: the folder's name)")  # fmt: skip

    @model_validator(mode="after")
    def _local_model_exists(self) -> ServedModel:
        """Only a local model is loaded from `model`; behind endpoints it is just a name."""
        if self.is_local:
            try:
                check_model_ref(self.model)
            except ValueError as exc:
                raise field_error(("model",), str(exc), self.model) from None
        return self

    @property
    def is_local(self) -> bool:
        return self.endpoints == "local"

    def endpoint_list(self) -> list[Endpoint]:
        if self.endpoints == "local":
            return [
                Endpoint(
                    base_url=f"http://127.0.0.1:{self.port}/v1",
                    model=self.served_name(),
                    max_concurrency=self.max_concurrency,
                )
            ]
        return list(self.endpoints)

    def display_name(self) -> str:
        return self.served_name() if self.is_local else self.endpoint_list()[0].model

    def served_name(self) -> str:
        """The model name a local server answers to."""
        return self.served_as or served_name(self.model)
