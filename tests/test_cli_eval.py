"""`rlaif judge-eval` and `rlaif eval-policy` against the real server."""

from __future__ import annotations

import json

from flows.cli import main
from tests.helpers import write_jsonl


def test_judge_eval_prints_the_figures(vllm_server, tmp_path, capsys):
    pairs = write_jsonl(tmp_path / "pairs.jsonl", [
        {"prompt": "What is 2 + 2?", "chosen": "2 + 2 = 4.", "rejected": "2 + 2 = 5."},
        {"prompt": "Capital of Italy?", "chosen": "Rome.", "rejected": "Paris."},
        {"prompt": "Is the sun a star?", "chosen": "Yes, the sun is a star.", "rejected": "No, it is a planet."},
    ])  # fmt: skip
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"policy:\n  port: {vllm_server.port}\n")
    assert (
        main(
            [
                "judge-eval",
                "--pairs",
                str(pairs),
                "--judge",
                "pairwise",
                "--recipe",
                str(recipe),
                "--json",
                "-",
            ]
        )
        == 0
    )
    out = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert out["n"] == 3 and out["parse_failures"] == 0
    for key in ("accuracy", "consistency", "p_first", "tie_rate", "length_baseline"):
        assert 0.0 <= out[key] <= 1.0
    assert (
        main(
            [
                "judge-eval",
                "--pairs",
                str(pairs),
                "--judge",
                "ultrafeedback",
                "--recipe",
                str(recipe),
                "--json",
                "-",
            ]
        )
        == 0
    )
    uf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert uf["n"] == 3 and uf["judge"] == "ultrafeedback"


def test_eval_policy_win_rate_with_interval(vllm_server, tmp_path, capsys):
    prompts = write_jsonl(tmp_path / "p.jsonl", [{"prompt": "Say hello."}, {"prompt": "Name a colour."}])
    recipe = tmp_path / "r.yaml"
    recipe.write_text(f"policy:\n  port: {vllm_server.port}\n")
    code = main(["eval-policy", "--model", "smollm2-135m-instruct", "--baseline", "smollm2-135m-instruct",
                 "--prompts", str(prompts), "--recipe", str(recipe), "--port", str(vllm_server.port),
                 "--max-tokens", "16"])  # fmt: skip
    assert code == 0
    res = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert res["n"] == 2 and res["wins"] + res["losses"] + res["ties"] == 2
    lo, hi = res["ci95"]
    assert 0.0 <= lo <= res["win_rate"] <= hi <= 1.0
    assert res["mean_len_model"] > 0 and res["mean_len_baseline"] > 0
