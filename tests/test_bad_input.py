"""Bad input: one line naming the culprit, exit code 2, nothing written, no model call."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

from flows.cli import main
from tests.helpers import free_port, write_jsonl


def run_cli(capsys, *argv: str) -> tuple[int, str]:
    code = main(list(argv))
    err = capsys.readouterr().err.strip()
    return code, err


def recipe(tmp_path: Path, body: str) -> str:
    p = tmp_path / "r.yaml"
    p.write_text(body)
    return str(p)


@pytest.mark.parametrize(
    ("body", "expected"),
    [
        ("sampling:\n  temprature: 0.5\n", "sampling.temprature (line 2): unknown field"),
        ("sampling:\n  n: zero\n", "sampling.n (line 2): Input should be a valid integer"),
        ("judges:\n  - type: rubric\n", "judges[0].type (line 2)"),
        (
            "policy:\n  endpoints:\n    - base_url: http://x/v1\n",
            "policy.endpoints[0].model (line 3): Field required",
        ),
        ("name: x\n  bad: [unclosed\n", "line 2: not valid YAML"),
        ("- just\n- a list\n", "must be a YAML mapping"),
    ],
)
def test_recipe_errors_name_the_field(capsys, tmp_path, body, expected):
    path = recipe(tmp_path, body)
    code, err = run_cli(capsys, "generate", path, "--out", str(tmp_path / "out"))
    assert code == 2
    assert err.count("\n") == 0, err
    assert path in err and expected in err
    assert not (tmp_path / "out").exists()


def test_missing_recipe_file(capsys, tmp_path):
    code, err = run_cli(capsys, "generate", str(tmp_path / "nope.yaml"))
    assert code == 2 and "nope.yaml: recipe file does not exist" in err


def test_missing_prompts_file(capsys, tmp_path):
    path = recipe(tmp_path, f"prompts:\n  path: {tmp_path}/missing.jsonl\n")
    code, err = run_cli(capsys, "generate", path, "--out", str(tmp_path / "o"))
    assert code == 2 and "missing.jsonl: prompts file does not exist" in err


def test_missing_prompt_column(capsys, tmp_path):
    data = write_jsonl(tmp_path / "p.jsonl", [{"question": "hi"}])
    path = recipe(tmp_path, f"prompts:\n  path: {data}\n  column: prompt\n")
    code, err = run_cli(capsys, "generate", path, "--out", str(tmp_path / "o"))
    assert code == 2 and "no column 'prompt'" in err and "question" in err


def test_unreadable_prompts_file(capsys, tmp_path):
    bad = tmp_path / "p.parquet"
    bad.write_text("this is not parquet")
    path = recipe(tmp_path, f"prompts:\n  path: {bad}\n")
    code, err = run_cli(capsys, "generate", path, "--out", str(tmp_path / "o"))
    assert code == 2 and "p.parquet: cannot read prompts" in err


def test_unreachable_endpoint_names_url(capsys, tmp_path):
    url = f"http://127.0.0.1:{free_port()}/v1"
    path = recipe(tmp_path, f"policy:\n  endpoints:\n    - base_url: {url}\n      model: m\n")
    code, err = run_cli(capsys, "generate", path, "--out", str(tmp_path / "o"), "--limit", "1")
    assert code == 2 and url in err and "unreachable" in err


def test_model_folder_that_is_not_a_model(capsys, tmp_path):
    folder = tmp_path / "notamodel"
    folder.mkdir()
    path = recipe(tmp_path, f"policy:\n  model: {folder}\n  port: {free_port()}\n")
    code, err = run_cli(capsys, "generate", path, "--out", str(tmp_path / "o"), "--limit", "1")
    assert code == 2 and str(folder) in err and "not a model folder" in err


def test_read_only_output_path(capsys, tmp_path):
    ro = Path("/sys/rlaif-out") if os.geteuid() == 0 else tmp_path / "ro" / "out"
    if os.geteuid() != 0:
        ro.parent.mkdir()
        ro.parent.chmod(0o500)
    code, err = run_cli(capsys, "generate", recipe(tmp_path, "name: x\n"), "--out", str(ro))
    assert code == 2 and "not writable" in err and str(ro) in err


def test_output_folder_that_cannot_be_created(capsys, tmp_path):
    blocker = tmp_path / "file"
    blocker.write_text("a file, not a folder")
    url = f"http://127.0.0.1:{free_port()}/v1"  # proves no endpoint is contacted first
    path = recipe(tmp_path, f"policy:\n  endpoints:\n    - base_url: {url}\n      model: m\n")
    code, err = run_cli(capsys, "generate", path, "--out", str(blocker / "out"))
    assert code == 2 and "not writable" in err and url not in err


def test_bad_limit(capsys, tmp_path):
    code, err = run_cli(capsys, "generate", recipe(tmp_path, "name: x\n"), "--limit", "0")
    assert code == 2 and "--limit" in err


LATE_ERRORS = [  # each used to fail only after hundreds of requests, or never
    ("judges:\n  - type: ultrafeedback\n    aspects: [helpfulnes]\n", "judges[0].aspects", "unknown aspect 'helpfulnes'"),
    ("judges:\n  - type: ultrafeedback\nbinarize:\n  score: ultrafeedbak\n", "binarize.score", "names no judge"),
    ("judges:\n  - type: reward_model\n    reward_model: runs/none/models/reward\n", "judges[0].reward_model",
     "not a model folder"),
    ("train:\n  method: dpo\n  model: runs/none/models/sft\n", "train.model", "does not exist"),
    ("train:\n  method: dpo\n", "train.model", "external endpoint"),
    ("judges:\n  - type: pairwise\n    aspects: [honesty]\n", "judges[0].aspects", "unknown field"),
]  # fmt: skip


@pytest.mark.parametrize(("extra", "field", "message"), LATE_ERRORS)
def test_bad_recipe_fails_before_any_request(capsys, tmp_path, extra, field, message):
    """Refused when the recipe is read: one line naming file and field, exit 2, 0 requests, no folder."""
    from tests.stubs import always_answers

    data = write_jsonl(tmp_path / "p.jsonl", [{"prompt": f"question {k}"} for k in range(8)])
    with always_answers("ok") as stub:
        path = recipe(tmp_path, f"prompts:\n  path: {data}\npolicy:\n  endpoints:\n    - base_url: {stub.base_url}\n"
                                f"      model: stub\nsampling:\n  n: 2\n{extra}")  # fmt: skip
        code, err = run_cli(capsys, "run", path, "--out", str(tmp_path / "out"))
        assert stub.calls == []
    assert code == 2 and err.count("\n") == 0, err
    assert path in err and field in err and message in err, err
    assert not (tmp_path / "out").exists()


def test_output_folder_is_not_created_when_prompts_are_bad(capsys, tmp_path):
    path = recipe(tmp_path, f"prompts:\n  path: {tmp_path}/missing.jsonl\n")
    code, _ = run_cli(capsys, "generate", path, "--out", str(tmp_path / "deep" / "out"))
    assert code == 2 and not (tmp_path / "deep").exists()


def test_model_names_behind_endpoints_are_not_checked_as_folders():
    from flows.recipe import parse_recipe

    eps = [{"base_url": "http://127.0.0.1:9/v1", "model": "gpt-x"}]
    r = parse_recipe({"policy": {"model": "gpt-x", "endpoints": eps},
                      "judges": [{"type": "pairwise", "judge": {"model": "judge-70b", "endpoints": eps}}]})  # fmt: skip
    assert r.policy.model == "gpt-x" and r.judges[0].judge.model == "judge-70b"
