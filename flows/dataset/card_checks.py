"""Card sections for what was checked and spent: the judge gate's figures and tokens/cost per stage."""

from __future__ import annotations

from typing import Any

from flows.dataset.gate_result import GateResult


def _fmt(v: Any) -> str:
    return "n/a" if v is None else f"{v:.2f}" if isinstance(v, float) else str(v)


def gate_section(result: GateResult | None) -> list[str]:
    """The judge gate: accuracy with its interval, the length baseline, position figures, the verdict."""
    if result is None:
        return []
    gate = result.model_dump()
    f = gate.get("figures") or {}
    verdict = ("informational (no thresholds)" if gate.get("informational") else
               "passed" if gate.get("passed") else
               "**failed** (the run went on because of --no-gate)" if gate.get("overridden") else "**failed**")  # fmt: skip
    ci = f" [{_fmt(f.get('ci_low'))}, {_fmt(f.get('ci_high'))}]" if f.get("ci_low") is not None else ""
    lines = ["## Judge gate", "",
             f"Judge `{gate['judge']}` on `{gate['pairs']}` ({f.get('n', 0)} labelled pairs, each shown in "
             f"both orders) before any generation: {verdict}.", "",
             "| figure | value | minimum |", "|---|---|---|"]  # fmt: skip
    th = gate.get("thresholds") or {}
    for name, label in (("accuracy", "accuracy (95% CI)"), ("length_baseline", "length-only baseline"),
                        ("margin_over_length", "margin over length"), ("consistency", "position consistency"),
                        ("p_first", "P(first shown wins)"), ("tie_rate", "tie rate"),
                        ("soft_accuracy", "soft accuracy"), ("brier", "Brier score")):  # fmt: skip
        if name in f:
            value = _fmt(f.get(name)) + (ci if name == "accuracy" else "")
            lines.append(f"| {label} | {value} | {_fmt(th.get(name)) if name in th else ''} |")
    return lines + [""]


def usage_section(usage: dict[str, dict[str, Any]] | None) -> list[str]:
    """Tokens, prefix-cache hits and cost per stage and judge (cost only where the recipe gave a price)."""
    if not usage:
        return []
    lines = ["## Tokens and cost", "",
             "| stage | requests (this run / from journal) | prompt tokens | cached | completion tokens | cost USD |",
             "|---|---|---|---|---|---|"]  # fmt: skip
    for key, u in usage.items():
        pt = u.get("prompt_tokens", 0)
        hit = f"{u.get('cached_prompt_tokens', 0) / pt:.0%}" if pt else "-"
        cost = "" if u.get("cost_usd") is None else f"${u['cost_usd']:,.4f}"
        lines.append(f"| {key} | {u.get('requests', 0)} / {u.get('replayed', 0)} | {pt:,} | {hit} | "
                     f"{u.get('completion_tokens', 0):,} | {cost} |")  # fmt: skip
    return lines + ["", "Cost is the whole dataset's tokens at the recipe's `price:` per endpoint.", ""]
