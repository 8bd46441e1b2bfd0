"""`rlaif iterate`: round 2's completions come from round 1's trained model (served by its own vLLM),
finished rounds are never redone, and bad `rounds:` set-ups fail before any request with one line."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
from datasets import load_from_disk

import tests.length_judge  # noqa: F401 - registers the `chars` judge
from flows.cli import main
from serving.models import weights_sha256
from tests.helpers import journal_records, write_jsonl

ROUNDS_PORT = int(os.environ.get("RLAIF_TEST_ROUNDS_PORT", "8767"))  # the trained policies' server
GOLD = Path(__file__).resolve().parents[1] / "data" / "gold" / "pairs.jsonl"


def rounds_recipe(tmp: Path, port: int, extra: str = "") -> Path:
    prompts = write_jsonl(tmp / "pool.jsonl", [{"prompt": f"Name {w} in one word."} for w in (
        "a fruit", "a colour", "an animal", "a city", "a planet", "a metal", "a tree", "a sport")])  # fmt: skip
    p = tmp / "rounds.yaml"
    p.write_text(f"""name: rounds
prompts: {{path: {prompts}}}
policy: {{port: {port}}}
sampling: {{n: 2, max_tokens: 12, temperature: 1.0}}
judges: [{{type: chars, per_char: -1.0}}]  # the shorter answer wins; scored locally
binarize: {{rule: best-vs-worst, test_fraction: 0.0}}
lints: {{allow_truncated_chosen: true}}
train: {{method: dpo, max_steps: 1, batch_size: 2, max_length: 64}}
rounds: {{count: 2, prompts_per_round: 3, eval_prompts: 2, eval_max_tokens: 12, port: {ROUNDS_PORT}}}
gate: {{pairs: {GOLD}, judge: chars}}  # re-checked every round (scored locally: no request)
{extra}""")
    return p


@pytest.fixture(scope="module")
def two_rounds(vllm_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("rounds")
    out = tmp / "out"
    code = main(["iterate", str(rounds_recipe(tmp, vllm_server.port)), "--out", str(out)])
    return code, tmp, out


def models_of(rdir: Path) -> set[str]:
    return {c["model"] for row in load_from_disk(str(rdir / "ultrafeedback")) for c in row["completions"]}


def test_round_two_generates_with_round_one_model(two_rounds, vllm_server):
    code, _, out = two_rounds
    assert code == 0
    r1, r2 = (json.loads((out / f"round-{k}" / "round.json").read_text()) for k in (1, 2))
    sha1 = weights_sha256(out / "round-1" / "models" / "dpo")
    assert r1["trained"]["sha256"] == sha1 and r2["policy"]["sha256"] == sha1 and r2["parent"] == 1
    assert models_of(out / "round-1") == {vllm_server.model_name}
    assert models_of(out / "round-2") == {f"round-1@{sha1[:12]}"}  # served from round 1's folder
    assert r2["trained"]["sha256"] != sha1 and r1["policy"]["round"] == 0
    ids = [{json.loads(x)["id"] for x in (out / f"round-{k}" / "prompts.jsonl").read_text().splitlines()}
           for k in (1, 2)]  # fmt: skip
    held = {json.loads(x)["id"] for x in (out / "eval-prompts.jsonl").read_text().splitlines()}
    assert len(ids[0]) == len(ids[1]) == 3 and not ids[0] & ids[1] and not held & (ids[0] | ids[1])
    for r in (r1, r2):
        for w in (r["vs_base"], r["vs_previous"]):
            assert w["n"] == 2 and w["wins"] + w["losses"] + w["ties"] == 2
            assert 0.0 <= w["ci_low"] <= w["rate"] <= w["ci_high"] <= 1.0
    card = (out / "round-2" / "README.md").read_text()
    assert "## On-policy round" in card and sha1 in card and "parent round | round 1" in card
    assert (out / "report" / "rounds.png").stat().st_size > 0
    assert [r["round"] for r in json.loads((out / "rounds.json").read_text())] == [1, 2]
    # every round re-checks the judge (round 2 reuses round 1's figures: nothing changed) and reports
    # the length figures that show length creep
    assert r1["gate"]["key"] == r2["gate"]["key"] and r2["gate"]["figures"]["n"] == 24
    assert (
        json.loads((out / "round-2" / "summary.json").read_text())["gate"]["figures"] == r1["gate"]["figures"]
    )
    for r in (r1, r2):
        assert r["base_mean_len"] > 0 and r["completion_len"] > 0 and 0 <= r["longer_chosen_share"] <= 1
        assert r["stopped"] is None
    assert "judge re-checked on the gate pairs | informational: judge chars" in card
    assert "pairs whose chosen answer is the longer one" in card


def test_finished_rounds_are_not_redone_and_an_unfinished_one_resumes(two_rounds, capsys):
    code, tmp, out = two_rounds
    assert code == 0
    before = {k: len(journal_records(out / f"round-{k}")) for k in (1, 2)}
    r1_mtime = (out / "round-1" / "round.json").stat().st_mtime
    (out / "round-2" / "round.json").unlink()  # as if killed after round 2's requests
    capsys.readouterr()
    assert main(["iterate", str(tmp / "rounds.yaml"), "--out", str(out)]) == 0
    assert (out / "round-1" / "round.json").stat().st_mtime == r1_mtime
    assert {k: len(journal_records(out / f"round-{k}")) for k in (1, 2)} == before  # nothing sent twice
    summary = json.loads((out / "round-2" / "summary.json").read_text())
    assert sum(s["requests"] for n, s in summary["stages"].items() if n != "build") == 0
    assert "win vs base" in capsys.readouterr().out


def test_unreadable_previous_round_model_fails_before_any_request(two_rounds, tmp_path, capsys):
    code, tmp, out = two_rounds
    assert code == 0
    broken = tmp_path / "out"
    (broken / "round-1").mkdir(parents=True)
    r1 = json.loads((out / "round-1" / "round.json").read_text())
    r1["trained"]["model"] = str(tmp_path / "gone")
    (broken / "round-1" / "round.json").write_text(json.dumps(r1))
    recipe = rounds_recipe(tmp_path, 9)  # port 9: nothing listens, so any request would fail differently
    assert main(["iterate", str(recipe), "--out", str(broken)]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "round 1's model" in err and "cannot be read" in err
    assert not (broken / "round-2").exists()


@pytest.mark.parametrize(
    ("extra_policy", "field"),
    [("policy: {endpoints: [{base_url: 'http://127.0.0.1:9/v1', model: m}]}\n", "rounds.reload_command"),
     ("", "rounds.port")],
)  # fmt: skip
def test_bad_rounds_setup_is_refused_when_the_recipe_is_read(tmp_path, capsys, extra_policy, field):
    recipe = rounds_recipe(tmp_path, ROUNDS_PORT if field == "rounds.port" else 8765)
    text = recipe.read_text()
    if extra_policy:
        text = text.replace("policy: {port: 8765}\n", extra_policy).replace(
            "train: {method: dpo,", "train: {model: smollm2-135m-instruct, method: dpo,"
        )
    recipe.write_text(text)
    assert main(["iterate", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and field in err and str(recipe) in err
    if field == "rounds.reload_command":  # the placeholder as the user types it, not "{{model}}"
        assert "({model} = the trained folder)" in err, err
    assert not (tmp_path / "out").exists()


def test_scheduled_flow_runs_the_next_round_only(two_rounds, tmp_path):
    """What `rlaif schedule --iterate` serves: a Prefect flow doing at most one new round per run."""
    from flows.rounds.flow import iterate_flow

    code, tmp, out = two_rounds
    assert code == 0
    res = iterate_flow(recipe_path=str(tmp / "rounds.yaml"), out=str(out))  # both rounds finished: no work
    assert res["out_dir"] == str(out) and res["rounds_finished"] == 2
    broken = tmp_path / "out"
    (broken / "round-1").mkdir(parents=True)
    r1 = json.loads((out / "round-1" / "round.json").read_text())
    r1["trained"]["sha256"] = "0" * 64  # a model changed since its round finished: refused, one line
    (broken / "round-1" / "round.json").write_text(json.dumps(r1))
    with pytest.raises(Exception, match="changed since it was trained"):
        iterate_flow(recipe_path=str(tmp / "rounds.yaml"), out=str(broken))


def test_a_stop_rule_ends_the_rounds_with_one_line(two_rounds, tmp_path, capsys):
    """`rounds.stop_when` is checked after every round, finished ones included: with a rule that round 2
    meets, `--rounds 3` starts no round 3 and says why."""
    import shutil

    code, tmp, out = two_rounds
    assert code == 0
    copy = tmp_path / "out"
    shutil.copytree(out, copy)
    r2 = json.loads((out / "round-2" / "round.json").read_text())
    recipe = (
        rounds_recipe(tmp_path, 9, "")
        .read_text()
        .replace(  # port 9: a request would fail
            f"port: {ROUNDS_PORT}}}",
            f"port: {ROUNDS_PORT}, stop_when: {{length_growth_above: {r2['mean_len'] / r2['base_mean_len'] / 2}}}}}",
        )
    )
    (tmp_path / "stop.yaml").write_text(recipe)
    capsys.readouterr()
    assert main(["iterate", str(tmp_path / "stop.yaml"), "--out", str(copy), "--rounds", "3"]) == 0
    lines = capsys.readouterr().out.strip().splitlines()
    assert lines[-2].startswith("rounds: stopped after round 2: answers grew to")
    assert not (copy / "round-3").exists()
    rounds = json.loads((copy / "rounds.json").read_text())
    assert [r["round"] for r in rounds] == [1, 2] and "stop_when.length_growth_above" in rounds[-1]["stopped"]
