"""The guard of the feedback contract: code outside judges/ never asks what kind of judge it holds.

`violations(root)` lists, for flows/, trainers/ and serving/ under `root`: a judge type name used as a
value (compared, assigned, passed, a default), a judge or judge-config class named (imported or used;
the contract's own `Judge` and `JudgeConfig` excepted), `isinstance`/`issubclass` on a judge, and a
comparison on a `.type`. Run `python tests/judge_guard.py [ROOT]` to see them for any checkout.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

SCANNED = ("flows", "trainers", "serving")
CONTRACT = {"Judge", "JudgeConfig"}
ALLOWED = {  # (file, what) -> why it is not a judge type check
    ("flows/dataset/schema.py", "judge type 'ultrafeedback' used as a value"): "the dataset folder's name",
    ("flows/recipe.py", "judge type 'reward_model' used as a value"): "the `train.reward_model` field's name",
    ("flows/training/train_flow.py", "judge type 'reward_model' used as a value"): (
        "the PPO trainer's `reward_model` field and the summary key of the reward model a round trained"
    ),
    ("serving/config_files.py", "compares a `.type`"): "a pydantic error's type",
}


def judge_classes(root: Path) -> tuple[set[str], set[str]]:
    """(class names under judges/ that subclass Judge or JudgeConfig, their `type` names)."""
    bases: dict[str, set[str]] = {}
    types: dict[str, str] = {}
    for path in (root / "judges").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if not isinstance(node, ast.ClassDef):
                continue
            bases[node.name] = {
                b.id if isinstance(b, ast.Name) else getattr(b, "attr", "") for b in node.bases
            }
            for stmt in node.body:  # `type = "x"` or `type: Literal["x"] = "x"`
                target = getattr(stmt, "target", None) or (getattr(stmt, "targets", None) or [None])[0]
                value = getattr(stmt, "value", None)
                if isinstance(target, ast.Name) and target.id == "type" and isinstance(value, ast.Constant):
                    types[node.name] = str(value.value)
    found = set(CONTRACT)
    changed = True
    while changed:
        grown = {name for name, bs in bases.items() if bs & found}
        changed = not grown <= found
        found |= grown
    classes = found - CONTRACT
    return classes, {types[c] for c in classes if c in types}


def _exempt_strings(tree: ast.AST) -> set[int]:
    """ids of string nodes that are not values: dict keys (field names) and sub-command names."""
    out: set[int] = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Dict):
            out |= {id(k) for k in node.keys if k is not None}
        if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "add_parser" and node.args:
            out.add(id(node.args[0]))
        if isinstance(node, ast.Expr) and isinstance(node.value, ast.Constant):
            out.add(id(node.value))  # docstrings
    return out


def violations(root: Path) -> list[str]:
    classes, types = judge_classes(root)
    hits = []
    for folder in SCANNED:
        for path in sorted((root / folder).rglob("*.py")):
            tree = ast.parse(path.read_text())
            exempt = _exempt_strings(tree)
            rel = path.relative_to(root)
            for node in ast.walk(tree):
                line = getattr(node, "lineno", 0)
                if isinstance(node, ast.Constant) and isinstance(node.value, str):
                    if node.value in types and id(node) not in exempt:
                        hits.append(f"{rel}:{line}: judge type {node.value!r} used as a value")
                elif isinstance(node, ast.Name) and node.id in classes:
                    hits.append(f"{rel}:{line}: judge class {node.id}")
                elif isinstance(node, ast.Attribute) and node.attr in classes:
                    hits.append(f"{rel}:{line}: judge class {node.attr}")
                elif isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("judges."):
                    hits += [
                        f"{rel}:{line}: imports judge class {a.name}" for a in node.names if a.name in classes
                    ]
                elif isinstance(node, ast.Call) and getattr(node.func, "id", "") in (
                    "isinstance",
                    "issubclass",
                ):
                    names = (
                        {n.id for n in ast.walk(node.args[1]) if isinstance(n, ast.Name)}
                        if len(node.args) > 1
                        else set()
                    )
                    if names & (classes | CONTRACT):
                        hits.append(f"{rel}:{line}: {node.func.id} on a judge ({', '.join(sorted(names))})")
                elif isinstance(node, ast.Compare):
                    for side in (node.left, *node.comparators):
                        key = side.attr if isinstance(side, ast.Attribute) else (
                            side.slice.value if isinstance(side, ast.Subscript) and isinstance(side.slice, ast.Constant) else None)  # fmt: skip
                        if key == "type":
                            hits.append(f"{rel}:{line}: compares a `.type`")
    return sorted({h for h in hits if (h.split(":")[0], h.split(": ", 1)[1]) not in ALLOWED})


if __name__ == "__main__":
    found = violations(Path(sys.argv[1] if len(sys.argv) > 1 else Path(__file__).resolve().parents[1]))
    print("\n".join(found) or "no judge type checks outside judges/")
    sys.exit(1 if found else 0)
