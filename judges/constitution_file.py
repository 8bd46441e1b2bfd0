"""Constitution files: principles (critique request, revision request, comparison question) + examples.

Validated strictly; every principle carries the sha256 of its own text so work can be cached by it.
"""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, field_validator, model_validator

from serving.config_files import load_model


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", str_strip_whitespace=True)


class Principle(_Strict):
    id: str = Field(min_length=1, pattern=r"^[A-Za-z0-9_.-]+$")
    critique: str = Field(min_length=1, description="asks for a critique of the last response")
    revision: str = Field(min_length=1, description="asks for a rewrite that fixes the critique")
    comparison: str = Field(min_length=1, description="question for choosing between two responses")

    def sha256(self) -> str:
        return hashlib.sha256(
            json.dumps([self.critique, self.revision, self.comparison]).encode()
        ).hexdigest()


class Example(_Strict):
    prompt: str = Field(min_length=1)
    response: str = Field(min_length=1)
    critique: str = Field(min_length=1)
    revision: str = Field(min_length=1)


class Constitution(_Strict):
    name: str = Field(min_length=1)
    version: str | int = 1
    description: str = ""
    principles: list[Principle] = Field(min_length=1)
    examples: list[Example] = Field(default_factory=list)
    _path: str = PrivateAttr(default="")
    _sha256: str = PrivateAttr(default="")

    @property
    def path(self) -> str:
        return self._path

    @property
    def sha256(self) -> str:
        return self._sha256

    @field_validator("principles")
    @classmethod
    def _unique_ids(cls, principles: list[Principle]) -> list[Principle]:
        ids = [p.id for p in principles]
        dup = sorted({i for i in ids if ids.count(i) > 1})
        if dup:
            raise ValueError(f"duplicate principle id(s) {dup}: ids must be unique")
        return principles

    @model_validator(mode="after")
    def _version_text(self) -> Constitution:
        self.version = str(self.version)
        return self

    def provenance(self) -> dict[str, str]:
        return {"name": self.name, "version": str(self.version), "path": self.path, "sha256": self.sha256}

    def summary(self) -> str:
        return (f"{self.path}: ok: {self.name} v{self.version}, {len(self.principles)} principles "
                f"({', '.join(p.id for p in self.principles)}), {len(self.examples)} examples, "
                f"sha256 {self.sha256[:12]}")  # fmt: skip


def load_constitution(path: str | Path) -> Constitution:
    """Read and validate a constitution file; errors give the file, field path and line."""
    c, text = load_model(path, Constitution, "constitution", "fields: name, version, description, "
                         "principles[{id, critique, revision, comparison}], examples")  # fmt: skip
    c._path = str(path)
    c._sha256 = hashlib.sha256(text.encode()).hexdigest()
    return c
