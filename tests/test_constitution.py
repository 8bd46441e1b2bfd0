"""Constitution files: validation errors name file/field/line; shipped files load."""

from __future__ import annotations

from pathlib import Path

import pytest

from flows.cli import main
from judges.constitution_file import load_constitution
from serving.errors import ConfigError

GOOD = """name: t
version: 1
principles:
  - id: p1
    critique: Critique it.
    revision: Revise it.
    comparison: Which is better?
"""


def write(tmp_path: Path, text: str) -> Path:
    p = tmp_path / "c.yaml"
    p.write_text(text)
    return p


def test_shipped_constitutions_load():
    files = sorted(Path(__file__).resolve().parents[1].joinpath("constitutions").glob("*.yaml"))
    assert len(files) >= 2
    for f in files:
        c = load_constitution(f)
        assert c.principles and len(c.sha256) == 64
        assert len({p.sha256() for p in c.principles}) == len(c.principles)


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        ("name: [oops\n", "not valid YAML"),
        ("name: t\n", "principles (line 1): Field required"),
        (GOOD.replace("    critique: Critique it.\n", ""), "principles[0].critique (line 4): Field required"),
        (
            GOOD + "  - id: p1\n    critique: a\n    revision: b\n    comparison: c\n",
            "duplicate principle id(s) ['p1']",
        ),
        (
            GOOD.replace("    comparison:", "    colour: red\n    comparison:"),
            "principles[0].colour (line 7): unknown field",
        ),
        (
            GOOD.replace("Revise it.", '""'),
            "principles[0].revision (line 6): String should have at least 1 character",
        ),
        (GOOD.replace("Revise it.", '"   "'), "principles[0].revision (line 6)"),
        ("name: t\nprinciples: []\n", "principles (line 2): List should have at least 1 item"),
    ],
)
def test_bad_constitution_names_the_field(tmp_path, text, expected):
    path = write(tmp_path, text)
    with pytest.raises(ConfigError) as err:
        load_constitution(path)
    msg = str(err.value)
    assert str(path) in msg and expected in msg and "\n" not in msg


def test_missing_file(tmp_path):
    with pytest.raises(ConfigError, match="constitution file does not exist"):
        load_constitution(tmp_path / "none.yaml")


def test_cli_check(capsys, tmp_path):
    good, bad = write(tmp_path, GOOD), tmp_path / "bad.yaml"
    bad.write_text("name: t\n")
    assert main(["constitution", "check", str(good)]) == 0
    assert "ok: t v1, 1 principles" in capsys.readouterr().out
    assert main(["constitution", "check", str(good), str(bad)]) == 2
    cap = capsys.readouterr()
    assert "bad.yaml: principles" in cap.err and "ok:" in cap.out


def test_recipe_with_bad_constitution_fails_before_any_model_call(capsys, tmp_path):
    bad = tmp_path / "bad.yaml"
    bad.write_text("name: t\n")
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"policy:\n  endpoints:\n    - base_url: http://127.0.0.1:9/v1\n      model: m\n"
                      f"critique:\n  constitution: {bad}\n")  # fmt: skip
    assert main(["run", str(recipe), "--out", str(tmp_path / "o")]) == 2
    err = capsys.readouterr().err
    assert "bad.yaml: principles" in err and "127.0.0.1:9" not in err
