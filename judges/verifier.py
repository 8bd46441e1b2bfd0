"""`VerifierJudge`: scores completions by checking them, no model call (verifiable rewards).

A completion scores 1.0 when it passes, 0.0 when it fails, None when it cannot be checked (no reference
in the prompt row); every score comes with its reason in the row's `notes`. Checks: `exact` or
`normalized` match of the answer with the reference column, a `regex` the answer must match, `math`
(the final answer, a number or an expression, equals the reference: sympy when it is installed), or a
`callable` of yours given as `module:function(response, reference, prompt) -> bool | float | (score, reason)`.
"""

from __future__ import annotations

import importlib
import re
from fractions import Fraction
from pathlib import Path
from typing import Any, Literal

from pydantic import Field, model_validator

from judges.contract import Completion, Judge, JudgeConfig, Judgement, Prompt


class VerifierConfig(JudgeConfig):
    type: Literal["verifier"] = "verifier"
    check: Literal["exact", "normalized", "regex", "math", "callable"] = "math"
    reference: str | None = Field(default="answer", description="prompt-set column with the reference answer")
    pattern: str | None = Field(default=None, description="regex: the answer must match it (search)")
    function: str | None = Field(default=None, description="callable: `module:function`")

    @model_validator(mode="after")
    def _needs(self) -> VerifierConfig:
        if self.check == "regex":
            if not self.pattern:
                raise ValueError("check `regex` needs `pattern: <regular expression>`")
            try:
                re.compile(self.pattern)
            except re.error as exc:
                raise ValueError(f"pattern {self.pattern!r} is not a regular expression: {exc}") from None
        if self.check == "callable" and (not self.function or ":" not in self.function):
            raise ValueError("check `callable` needs `function: module:function`")
        if self.check in ("exact", "normalized", "math") and not self.reference:
            raise ValueError(f"check `{self.check}` needs `reference: <column of the prompt set>`")
        return self


_NUMBER = r"-?\$?\d[\d,]*(?:\.\d+)?(?:/\d+)?%?"
_FINAL = [  # where a final answer is stated, most explicit first
    re.compile(r"\\boxed\{([^{}]+)\}"),
    re.compile(r"####\s*([^\n]+)"),
    re.compile(r"(?:final answer|the answer|answer)\s*(?:is|:|=)\s*\$?([^\n]+)", re.IGNORECASE),
]
_SAFE_EXPR = re.compile(r"^[0-9a-z+\-*/^(). ]+$")  # what sympy is allowed to parse (no names beyond letters)


def normalize(text: str) -> str:
    """Lower case, no surrounding punctuation, whitespace collapsed."""
    return " ".join(str(text).lower().strip().strip(".!?;:\"'`").split())


def stated_answer(text: str) -> str | None:
    """The final answer where the text states one (boxed, `####`, "the answer is"), else None."""
    for pattern in _FINAL:
        found = pattern.findall(text)
        if found:
            return found[-1].strip().rstrip(".")
    return None


def final_answer(text: str) -> str | None:
    """The stated final answer, else the last number in the text."""
    numbers = re.findall(_NUMBER, text)
    return stated_answer(text) or (numbers[-1] if numbers else None)


def as_number(text: str) -> Fraction | None:
    """A number, optionally followed by words ("5 apples", "$20"); None for anything else ("2x+2")."""
    found = re.fullmatch(r"\s*(" + _NUMBER + r")\s*([A-Za-z ]*)[.!]?\s*", text)
    if found is None:
        return None
    raw = found.group(1).replace("$", "").replace(",", "").rstrip("%")
    try:
        return Fraction(raw)
    except (ValueError, ZeroDivisionError):
        return None


def same_math(answer: str, reference: str) -> bool:
    """Equal as numbers (integers exactly, others within 1e-6 relative: 0.333333 = 1/3), else as
    expressions (sympy)."""
    a, b = as_number(answer), as_number(reference)
    if a is not None and b is not None:
        whole = a.denominator == 1 and b.denominator == 1
        return a == b or (not whole and abs(float(a) - float(b)) <= 1e-6 * max(1.0, abs(float(b))))
    x, y = normalize(answer).replace("**", "^"), normalize(reference).replace("**", "^")
    if x == y:
        return True
    if not (_SAFE_EXPR.match(x) and _SAFE_EXPR.match(y)) or re.search(r"[a-z]\.|[a-z]{2,}", x + " " + y):
        return False  # only arithmetic over single-letter variables reaches sympy's parser
    try:
        import sympy
        from sympy.parsing.sympy_parser import parse_expr, standard_transformations

        tr = standard_transformations + (sympy.parsing.sympy_parser.implicit_multiplication_application,)
        diff = parse_expr(x.replace("^", "**"), transformations=tr) - parse_expr(
            y.replace("^", "**"), transformations=tr
        )
        return bool(sympy.simplify(diff) == 0)
    except Exception:  # noqa: BLE001 - an unparseable answer is simply not equal
        return False


class VerifierJudge(Judge):
    """Checks each completion against the prompt's reference (or a pattern, or your function)."""

    type = "verifier"
    config_class = VerifierConfig
    uses_endpoint = False
    gives_notes = True

    def __init__(
        self, config: VerifierConfig, client: Any = None, allow_truncated_chosen: bool = False
    ) -> None:
        super().__init__(config, client, allow_truncated_chosen)
        self.cfg = config
        self.fn = None
        if config.check == "callable":
            module, _, name = str(config.function).partition(":")
            try:
                self.fn = getattr(importlib.import_module(module), name)
            except (ImportError, AttributeError) as exc:
                raise ValueError(f"verifier function {config.function}: {exc}") from None

    def columns(self) -> list[str]:
        return [self.cfg.reference] if self.cfg.reference else []

    def requests_per_prompt(self, n: int) -> int:
        return 0

    def model_name(self, endpoint_models: list[str]) -> str:
        return f"verifier:{self.cfg.check}"

    def extra_files(self) -> list[Path]:
        file = getattr(importlib.import_module(self.fn.__module__), "__file__", None) if self.fn else None
        return [Path(file)] if file else []

    def verify(self, response: str, reference: Any, prompt: Prompt) -> tuple[float | None, str]:
        c = self.cfg
        if self.fn is not None:
            got = self.fn(response, reference, prompt.prompt)
            score, reason = got if isinstance(got, tuple) else (got, f"{c.function} returned {got!r}")
            return (None if score is None else float(score)), str(reason)
        if c.check == "regex":
            m = re.search(str(c.pattern), response)
            return (1.0, f"matches {c.pattern}") if m else (0.0, f"does not match {c.pattern}")
        if reference is None or str(reference).strip() == "":
            return None, f"no reference in column {c.reference!r}"
        ref = str(reference)
        if c.check == "exact":
            ok = response.strip() == ref.strip()
            return float(ok), "exact match" if ok else "not an exact match"
        if c.check == "normalized":
            ok = normalize(response) == normalize(ref)
            return float(ok), "normalized match" if ok else "no normalized match"
        answer = final_answer(response)
        if answer is None:
            return 0.0, f"no final answer found (reference {ref})"
        ok = same_math(answer, stated_answer(ref) or ref)
        return float(ok), f"final answer {answer} {'=' if ok else '!='} reference {ref}"

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        reference = prompt.columns.get(self.cfg.reference) if self.cfg.reference else None
        checked = [self.verify(c.response, reference, prompt) for c in completions]
        scores = [s for s, _ in checked]
        return Judgement(
            scores=scores, notes=[r for _, r in checked],
            detail={"passed": sum(s == 1.0 for s in scores), "failed": sum(s == 0.0 for s in scores)},
        )  # fmt: skip

    def figures(self, t: dict[str, Any]) -> dict[str, Any]:
        f = super().figures(t)
        passed, failed, unchecked = (
            int(t.get("passed", 0)),
            int(t.get("failed", 0)),
            int(t.get("unscored", 0)),
        )
        checked = passed + failed
        f["pass_rate"] = passed / checked if checked else None
        f["quality"] = (
            f"{passed} of {checked} completions pass `{self.cfg.check}`, {unchecked} could not be checked"
        )
        f["headline"] = {"pass rate": round(passed / checked, 2)} if checked else {}
        return f
