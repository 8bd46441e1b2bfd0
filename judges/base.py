"""Shared judge helpers: Jinja templates beside the judges, tolerant JSON parsing, logprob reading."""

from __future__ import annotations

import json
import math
import random
import re
from functools import lru_cache
from pathlib import Path
from typing import Any

import jinja2

TEMPLATES = Path(__file__).parent / "templates"
MAX_RESPONSE_CHARS = 1500  # each completion shown to a judge is cut to this (context budget)


@lru_cache(maxsize=1)
def _env() -> jinja2.Environment:
    return jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(TEMPLATES)),
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )


def render(template: str, **values: Any) -> str:
    return _env().get_template(template).render(**values).strip()


def clip(text: str, limit: int = MAX_RESPONSE_CHARS) -> str:
    return text if len(text) <= limit else text[:limit] + " [...]"


def seeded_order(n: int, *parts: object) -> list[int]:
    """A shuffled order of range(n), reproducible from the parts (seed, prompt id, aspect...)."""
    order = list(range(n))
    random.Random("|".join(map(str, parts))).shuffle(order)
    return order


def parse_json_object(text: str) -> dict[str, Any] | None:
    """The first JSON object in `text` (also inside ``` fences), or None."""
    text = text.strip()
    try:
        value = json.loads(text)
        return value if isinstance(value, dict) else None
    except ValueError:
        pass
    start = text.find("{")
    while start != -1:
        depth = 0
        for i in range(start, len(text)):
            if text[i] == "{":
                depth += 1
            elif text[i] == "}":
                depth -= 1
                if depth == 0:
                    try:
                        value = json.loads(text[start : i + 1])
                        if isinstance(value, dict):
                            return value
                    except ValueError:
                        break
        start = text.find("{", start + 1)
    return None


_RATING = re.compile(r'"?rating"?\s*[:=]\s*"?(\d+)')


def scan_ratings(text: str) -> list[int]:
    """Tolerant fallback: every `rating: N` in order (works on truncated JSON and plain text)."""
    return [int(m) for m in _RATING.findall(text)]


def choice_probability(
    logprobs: list[dict[str, Any]] | None, options: tuple[str, str] = ("A", "B")
) -> float | None:
    """P(options[0]) / (P(a) + P(b)) at the first generated token that is one of the options."""
    if not logprobs:
        return None
    for entry in logprobs:
        tok = str(entry.get("token", "")).strip().strip('"(').strip()
        if tok not in options:
            continue
        probs = {o: 0.0 for o in options}
        tops = entry.get("top_logprobs") or [{"token": entry["token"], "logprob": entry["logprob"]}]
        for top in tops:
            t = str(top.get("token", "")).strip().strip('"(').strip()
            if t in probs:
                probs[t] += math.exp(float(top["logprob"]))
        total = sum(probs.values())
        return probs[options[0]] / total if total > 0 else None
    return None
