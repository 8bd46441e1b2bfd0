"""Load YAML config files into pydantic models with one-line errors: file, field path and line."""

from __future__ import annotations

from pathlib import Path
from typing import Any, TypeVar

import yaml
from pydantic import BaseModel, ValidationError
from pydantic_core import PydanticCustomError

from serving.errors import ConfigError

M = TypeVar("M", bound=BaseModel)


def field_error(loc: tuple[int | str, ...], message: str, value: Any = None) -> ValidationError:
    """A validation error at `loc` (raise it from a model validator to name the exact field)."""
    err = PydanticCustomError("invalid_field", message)  # no context: pydantic leaves braces as they are
    return ValidationError.from_exception_data("recipe", [{"type": err, "loc": loc, "input": value}])


def field_path(loc: tuple[int | str, ...]) -> str:
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else str(part))
    return out or "(top level)"


def line_of(text: str, loc: tuple[int | str, ...]) -> int | None:
    """1-based line of the YAML node at `loc` (or its nearest existing parent)."""
    try:
        node = yaml.compose(text, Loader=yaml.SafeLoader)
    except yaml.YAMLError:
        return None
    line = node.start_mark.line + 1 if node is not None else None
    for part in loc:
        if isinstance(node, yaml.MappingNode) and isinstance(part, str):
            hit = next(((k, v) for k, v in node.value if getattr(k, "value", None) == part), None)
            if hit is None:
                break
            line, node = hit[0].start_mark.line + 1, hit[1]
        elif isinstance(node, yaml.SequenceNode) and isinstance(part, int) and part < len(node.value):
            node = node.value[part]
            line = node.start_mark.line + 1
        else:
            break
    return line


def describe_error(source: str, text: str, exc: ValidationError, hint: str = "") -> str:
    errors = exc.errors()

    def clean(loc: tuple[int | str, ...]) -> tuple[int | str, ...]:  # drop union-branch tags
        return tuple(p for p in loc if not (isinstance(p, str) and ("[" in p or p.startswith("function-"))))

    first = max(errors, key=lambda e: len(clean(e["loc"])))  # the most specific error
    loc = clean(first["loc"])
    msg = first["msg"].removeprefix("Value error, ")
    if first["type"] == "extra_forbidden":
        msg = "unknown field (check the spelling" + (f"; {hint}" if hint else "") + ")"
    line = line_of(text, loc)
    where = f" (line {line})" if line else ""
    more = f" (+{len(errors) - 1} more)" if len(errors) > 1 else ""
    return f"{source}: {field_path(loc)}{where}: {msg}{more}"


def read_yaml(path: Path, kind: str) -> tuple[str, Any]:
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: {kind} file does not exist") from None
    except OSError as exc:
        raise ConfigError(f"{path}: cannot read {kind}: {exc.strerror}") from None
    try:
        return text, yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" line {mark.line + 1}:" if mark else ""
        raise ConfigError(f"{path}:{where} not valid YAML: {getattr(exc, 'problem', exc)}") from None


def load_model(path: str | Path, model: type[M], kind: str, hint: str = "") -> tuple[M, str]:
    """Validate a YAML file as `model`; returns the model and the file text."""
    p = Path(path)
    text, data = read_yaml(p, kind)
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{p}: a {kind} must be a YAML mapping, got {type(data).__name__}")
    try:
        return model.model_validate(data), text
    except ValidationError as exc:
        raise ConfigError(describe_error(str(p), text, exc, hint)) from None
