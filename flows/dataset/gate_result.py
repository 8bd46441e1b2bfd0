"""What the judge gate measured and decided: a record the summary, the card and the closing table read."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field


class GateResult(BaseModel):
    """What the gate measured and decided (summary.json `gate`, the card, OUT/gate.json)."""

    judge: str
    pairs: str
    key: str  # judge fingerprint + pairs content: a re-run with the same key reuses these figures
    thresholds: dict[str, float] = Field(default_factory=dict)
    figures: dict[str, Any] = Field(default_factory=dict)
    failures: list[str] = Field(default_factory=list)  # e.g. "accuracy 0.50 < 0.70"
    passed: bool = True
    informational: bool = False  # no thresholds: figures only
    overridden: bool = False  # failed, and the run went on because of --no-gate

    def line(self) -> str:
        f = self.figures
        parts = [f"{k} {f[k]:.2f}" for k in ("accuracy", "margin_over_length", "consistency", "p_first")
                 if isinstance(f.get(k), (int, float))]  # fmt: skip
        verdict = "informational" if self.informational else ("passed" if self.passed else "FAILED")
        return (
            f"{verdict}: judge {self.judge} on {Path(self.pairs).name} ({f.get('n', 0)} pairs): "
            + ", ".join(parts)
        )
