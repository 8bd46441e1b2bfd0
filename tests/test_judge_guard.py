"""The feedback contract's guard (tests/judge_guard.py): no judge type name, judge class or `isinstance`
on a judge outside judges/. It fails on the commit before the contract (ec44f6b: `cli/judge.py` defaulted
to "pairwise" and named the constitution label judge; `eval_policy.py` had `isinstance(j, PairwiseConfig)`)."""

from __future__ import annotations

import ast
import textwrap
from pathlib import Path

from tests.judge_guard import violations

ROOT = Path(__file__).resolve().parents[1]


def test_no_judge_type_checks_outside_judges():
    assert violations(ROOT) == []


def _tree(tmp: Path, code: str) -> Path:
    """A copy of judges/ plus one flows/ module with `code`."""
    (tmp / "judges").mkdir(parents=True)
    for p in (ROOT / "judges").glob("*.py"):
        (tmp / "judges" / p.name).write_text(p.read_text())
    for folder in ("flows", "trainers", "serving"):
        (tmp / folder).mkdir()
    (tmp / "flows" / "probe.py").write_text(textwrap.dedent(code))
    ast.parse((tmp / "flows" / "probe.py").read_text())
    return tmp


def test_the_guard_catches_each_kind_of_check(tmp_path):
    cases = {
        "default": 'def f(name=None):\n    return name or "pairwise"\n',
        "compare": 'def f(j):\n    return j.type == "x"\n',
        "isinstance": "from judges.pairwise import PairwiseConfig\n\ndef f(j):\n    return isinstance(j, PairwiseConfig)\n",
        "class": "import judges.constitution_judge as c\n\nX = c.ConstitutionJudge\n",
        "type in": 'def f(j):\n    return j in ("ultrafeedback", "reward_model")\n',
    }
    for k, (name, code) in enumerate(cases.items()):
        hits = violations(_tree(tmp_path / str(k), code))
        assert hits, f"{name}: not caught"
    clean = 'def f(options):\n    return {"constitution": options}\n'  # a field name is no type check
    assert violations(_tree(tmp_path / "clean", clean)) == []
