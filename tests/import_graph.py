"""The import graph of the code, drawn from the code: which part of flows/ (and which top-level package)
imports which. `python tests/import_graph.py --write` redraws it in docs/DEVELOPING.md; the layout test
checks the drawing is current and that no import runs back up `LAYERS`.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
PACKAGES = ("flows", "judges", "serving", "trainers")
# bottom first: a part may import only parts before it (and itself)
LAYERS = ["serving", "trainers", "judges", "flows.recipe", "flows.dataset", "flows.engine", "flows.evals",
          "flows.review", "flows.hub", "flows.training", "flows.pipeline", "flows.rounds", "flows.cli"]  # fmt: skip
BEGIN, END = "<!-- import-graph:begin -->", "<!-- import-graph:end -->"


def part(module: str) -> str | None:
    """flows.<sub> for flows/, else the top-level package; None for outside code."""
    bits = module.split(".")
    if bits[0] not in PACKAGES:
        return None
    if bits[0] == "flows" and len(bits) > 1 and bits[1] != "__init__":
        return f"flows.{bits[1]}"
    return bits[0]


def edges(root: Path = ROOT) -> dict[str, set[str]]:
    """part -> the parts it imports (module level and inside functions)."""
    out: dict[str, set[str]] = {}
    for pkg in PACKAGES:
        for path in (root / pkg).rglob("*.py"):
            src = part(".".join(path.relative_to(root).with_suffix("").parts))
            if src is None:
                continue
            for node in ast.walk(ast.parse(path.read_text())):
                names = [node.module] if isinstance(node, ast.ImportFrom) and node.module and not node.level else (
                    [a.name for a in node.names] if isinstance(node, ast.Import) else [])  # fmt: skip
                for name in names:
                    dst = part(name)
                    if dst and dst != src:
                        out.setdefault(src, set()).add(dst)
    return out


def upward(graph: dict[str, set[str]]) -> list[str]:
    """Imports that run back up `LAYERS` (or touch a part the layers do not name)."""
    bad = []
    for src, dsts in sorted(graph.items()):
        for dst in sorted(dsts):
            if src not in LAYERS or dst not in LAYERS or LAYERS.index(dst) >= LAYERS.index(src):
                bad.append(f"{src} -> {dst}")
    return bad


def drawing(graph: dict[str, set[str]]) -> str:
    """A mermaid graph (GitHub draws it) and the same as text, top layer first."""
    order = [p for p in reversed(LAYERS) if p in graph or any(p in d for d in graph.values())]
    lines = [BEGIN, "```mermaid", "graph TD"] + [f"  {p.replace('.', '_')}[{p}]" for p in order]
    for src in order:
        for dst in sorted(graph.get(src, ()), key=LAYERS.index, reverse=True):
            lines.append(f"  {src.replace('.', '_')} --> {dst.replace('.', '_')}")
    lines += ["```", "", "```text"]
    width = max(len(p) for p in order)
    for src in order:
        dsts = sorted(graph.get(src, ()), key=LAYERS.index, reverse=True)
        lines.append(f"{src.ljust(width)}  imports  {', '.join(dsts) if dsts else '(nothing of ours)'}")
    lines += ["```", END]
    return "\n".join(lines)


def doc_with_drawing(text: str, graph: dict[str, set[str]]) -> str:
    start, stop = text.index(BEGIN), text.index(END) + len(END)
    return text[:start] + drawing(graph) + text[stop:]


if __name__ == "__main__":
    g = edges()
    doc = ROOT / "docs" / "DEVELOPING.md"
    if "--write" in sys.argv:
        doc.write_text(doc_with_drawing(doc.read_text(), g))
    print(drawing(g))
    print("\n".join(f"runs back up: {b}" for b in upward(g)) or "no import runs back up")
