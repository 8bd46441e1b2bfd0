"""User-facing errors: one line that names the culprit (file, field, endpoint) and how to fix it."""

from typing import ClassVar


class RlaifError(Exception):
    """An error the CLI prints as one line (`rlaif: <label>: ...`) and exits with `exit_code` on."""

    exit_code: ClassVar[int] = 2
    label: ClassVar[str] = "error"


class ConfigError(RlaifError):
    """A recipe, constitution or other config file is wrong."""


class EndpointError(RlaifError):
    """An endpoint is unreachable or keeps failing after the retry budget."""


class ModelError(RlaifError):
    """A model folder or name that is not a usable model."""


class DataError(RlaifError):
    """An input dataset or prompts file is missing, unreadable or lacks a column."""
