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


TIE_TOKENS = ("tie", "t", "ti")  # how a "tie" verdict's first token may read


def choice_probability(
    logprobs: list[dict[str, Any]] | None, options: tuple[str, str] = ("A", "B")
) -> float | None:
    """P(options[0]) / (P(a) + P(b)) read at the token where the verdict value starts.

    The generated text is rebuilt from the logprob tokens. In a JSON answer the verdict value starts
    after the top-level `"verdict"` key, its `:` and the opening `"`, whatever the key order; in a
    bare answer (`A`, `(A)`, `"B"`) it is the first token with any content. Options found elsewhere
    (a rationale, a key) are never read. At that position the options' probabilities are summed
    over `top_logprobs` (also when the chosen token is another one, e.g. `tie`). A tie's probability
    counts half for each option; an option missing from the alternatives gets the least listed
    probability (a bound), not 0. None when there is no verdict position or neither option is among
    the alternatives there.
    """
    if not logprobs:
        return None

    def norm(token: Any) -> str:
        return str(token).strip().strip('"():,{}*').strip()

    tokens = [str(e.get("token", "")) for e in logprobs]
    text = "".join(tokens)

    def json_verdict_start() -> int | None:
        """Offset of the value of a depth-1 "verdict" key (last one, as json.loads keeps), or None."""
        found, depth = None, 0
        i = text.find("{")
        if i == -1:
            return None
        while i < len(text):
            ch = text[i]
            if ch in "{[":
                depth += 1
            elif ch in "}]":
                depth -= 1
            elif ch == '"':
                j = i + 1
                while j < len(text) and text[j] != '"':
                    j += 2 if text[j] == "\\" else 1
                if j >= len(text):
                    break  # truncated inside a string
                key, i = text[i + 1 : j], j
                k = j + 1
                while k < len(text) and text[k].isspace():
                    k += 1
                if depth == 1 and key == "verdict" and k < len(text) and text[k] == ":":
                    k += 1
                    while k < len(text) and text[k].isspace():
                        k += 1
                    if k < len(text):
                        found = k + 1 if text[k] == '"' else k
            i += 1
        return found

    pos = json_verdict_start()
    starts = [0]
    for t in tokens:
        starts.append(starts[-1] + len(t))
    if pos is not None:  # the token that holds the verdict value's first character
        at = next((k for k in range(len(tokens)) if starts[k] <= pos < starts[k + 1]), None)
    elif "{" in text:
        return None  # JSON without a readable verdict: no position to read
    else:  # a bare answer: its first token with content
        at = next((k for k, t in enumerate(tokens) if norm(t)), None)
    if at is None:
        return None
    entry = logprobs[at]
    tops = list(entry.get("top_logprobs") or [])
    if not any(str(t.get("token", "")) == tokens[at] for t in tops) and "logprob" in entry:
        tops.append({"token": tokens[at], "logprob": entry["logprob"]})  # the chosen token
    probs = {o: 0.0 for o in options}
    tie = 0.0
    for top in tops:
        t = norm(top.get("token", ""))
        if t in probs:
            probs[t] += math.exp(float(top["logprob"]))
        elif t.lower() in TIE_TOKENS:
            tie += math.exp(float(top["logprob"]))
    if not any(probs.values()):
        return None
    # An option missing from the alternatives is at most as likely as the least likely one listed, and
    # at most the mass the listed ones leave: that bound, not 0, so a missing option is no certainty.
    listed = [math.exp(float(t["logprob"])) for t in tops]
    floor = min(min(listed, default=0.0), max(0.0, 1.0 - sum(listed)))
    probs = {o: p if p > 0 else floor for o, p in probs.items()}
    total = sum(probs.values()) + tie
    return (probs[options[0]] + tie / 2) / total
