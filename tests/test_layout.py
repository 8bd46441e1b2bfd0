"""The layout of the code: flows/ by job with only its entry modules at the root, no two modules with
one name doing different jobs, no import running back up, and the drawing in docs/DEVELOPING.md current."""

from __future__ import annotations

from collections import Counter

from tests.import_graph import ROOT, drawing, edges, upward

SHARED_NAMES = {"__init__", "__main__"}


def test_flows_root_holds_only_the_entry_modules():
    assert sorted(p.name for p in (ROOT / "flows").glob("*.py")) == [
        "__init__.py",
        "pipeline.py",
        "recipe.py",
    ]


def test_no_two_modules_share_a_name():
    names = Counter(
        p.stem for pkg in ("flows", "judges", "serving", "trainers") for p in (ROOT / pkg).rglob("*.py")
    )
    assert {n: k for n, k in names.items() if k > 1 and n not in SHARED_NAMES} == {}


def test_no_import_runs_back_up_and_the_drawing_is_current():
    graph = edges()
    assert upward(graph) == []
    doc = (ROOT / "docs" / "DEVELOPING.md").read_text()
    assert drawing(graph) in doc, "the import graph changed: run `python tests/import_graph.py --write`"
