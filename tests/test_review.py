"""Review decisions without a browser: the build obeys them (property test over random decisions), the
page's API pages and records them, `--export-gold` writes them, and bad input is one line."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from flows.cli import main
from flows.dataset.decisions import Decision, append_decision, read_decisions
from serving.errors import DataError
from tests.helpers import synthetic_build


def pairs(out: Path) -> dict[str, dict]:
    import datasets

    b = datasets.load_from_disk(str(out / "binarized"))
    return {r["pair_id"]: r for s in ("train_prefs", "test_prefs") for r in b[s]}


@pytest.fixture(scope="module")
def built(tmp_path_factory) -> Path:
    return synthetic_build(tmp_path_factory.mktemp("review") / "run", n_prompts=24)


def rebuild(out: Path) -> dict:
    synthetic_build(out, n_prompts=24)
    return json.loads((out / "build.json").read_text())


def fresh(built: Path, tmp_path: Path) -> Path:
    import shutil

    out = tmp_path / "run"
    shutil.copytree(built, out)
    shutil.rmtree(out / "shards")  # synthetic_build writes its own shard again
    return out


@settings(max_examples=12, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    picks=st.lists(
        st.tuples(st.integers(0, 23), st.sampled_from(["accept", "flip", "tie", "drop"])), max_size=12
    ),
    ghosts=st.integers(0, 2),
)
def test_build_obeys_decisions(built, tmp_path_factory, picks, ghosts):
    out = fresh(built, tmp_path_factory.mktemp("p"))
    before = pairs(out)
    ids = sorted(before)
    for k, d in picks:  # later lines override earlier ones for the same pair
        append_decision(out, Decision(pair_id=ids[k % len(ids)], decision=d))
    for g in range(ghosts):
        append_decision(out, Decision(pair_id=f"gone{g}", decision="flip"))
    last = {ids[k % len(ids)]: d for k, d in picks}
    res = rebuild(out)
    after = pairs(out)
    gone = {k for k, d in last.items() if d in ("drop", "tie")}  # keep_ties is off
    assert set(after) == set(before) - gone  # ids are stable across builds; a decision never changes one
    for k, d in last.items():
        if d in ("accept", "flip"):
            a, b = before[k], after[k]
            swapped = (b["chosen"], b["rejected"]) == (a["rejected"], a["chosen"])
            assert swapped == (d == "flip") and b["origin"] == "human" and f"reviewed: {d}" in b["flags"]
            assert b["margin"] >= 0
    untouched = set(before) - set(last)
    assert all(after[k] == before[k] for k in untouched)
    rv, led = res["review"], res["ledger"]
    assert rv["unmatched"] == ghosts and rv["decisions"] == len(last) + ghosts
    drops = led["pairs"]["judge"]["dropped"]
    assert drops.get("reviewer: drop", 0) == sum(d == "drop" for d in last.values())
    assert drops.get("reviewer: tie", 0) == sum(d == "tie" for d in last.values())
    acc = led["pairs"]["judge"]
    assert acc["given"] == acc["kept"] + sum(acc["dropped"].values())  # the ledger closes


def test_malformed_decision_line_stops_the_build_naming_it(built, tmp_path):
    out = fresh(built, tmp_path)
    path = out / "review" / "decisions.jsonl"
    path.parent.mkdir()
    path.write_text('{"pair_id": "a", "decision": "flip"}\n{"pair_id": "b", "decision": "maybe"}\n')
    marker = (out / "build.json").read_text()
    with pytest.raises(DataError, match=r"decisions.jsonl:2: decision"):
        read_decisions(path)
    with pytest.raises(DataError, match=r"decisions.jsonl:2"):
        rebuild(out)
    assert (out / "build.json").read_text() == marker  # the finished build is left as it was


def one_line_error(capsys, argv: list[str]) -> str:
    code = main(argv)
    err = capsys.readouterr().err.strip()
    assert code != 0 and len(err.splitlines()) == 1, err
    return err


def test_bad_input_is_one_line_and_writes_nothing(built, tmp_path, capsys):
    not_run = tmp_path / "plain"
    not_run.mkdir()
    assert "not an rlaif run" in one_line_error(capsys, ["review", str(not_run)])
    assert "no such folder" in one_line_error(capsys, ["review", str(tmp_path / "nope")])
    out = fresh(built, tmp_path)
    import shutil

    shutil.rmtree(out / "binarized")
    assert "binarized: no preference pairs" in one_line_error(capsys, ["review", str(out)])
    out2 = fresh(built, tmp_path / "b")
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        port = s.getsockname()[1]
        assert f"--port {port} on 127.0.0.1 is in use" in one_line_error(
            capsys, ["review", str(out2), "--port", str(port)]
        )
    (out2 / "review").mkdir()
    (out2 / "review" / "decisions.jsonl").write_text("not json\n")
    assert "decisions.jsonl:1: not valid JSON" in one_line_error(capsys, ["review", str(out2)])
    assert "decisions.jsonl:1" in one_line_error(
        capsys, ["review", str(out2), "--export-gold", str(tmp_path / "g.jsonl")]
    )
    assert not (tmp_path / "g.jsonl").exists()
    assert [p.name for p in (out2 / "review").iterdir()] == ["decisions.jsonl"]
    assert not (not_run / "review").exists()


def test_api_pages_filters_and_records_decisions(built, tmp_path):
    from starlette.testclient import TestClient

    from flows.review.index import RunIndex
    from flows.review.server import make_app

    out = fresh(built, tmp_path)
    ix = RunIndex(out)
    client = TestClient(make_app(ix, reviewer="ana"), base_url="http://127.0.0.1")
    assert "rlaif review" in client.get("/").text
    page = client.get("/api/pairs", params={"limit": 5}).json()
    assert page["total"] == ix.n == 24 and len(page["rows"]) == 5
    rest = client.get("/api/pairs", params={"limit": 50, "offset": 5}).json()["rows"]
    assert len({r["pair_id"] for r in page["rows"] + rest}) == 24  # pages cover every pair once
    assert client.get("/api/pairs", params={"q": "sure! 1"}).json()["total"] == sum(
        "sure! 1" in (r["chosen"] + r["rejected"]).lower() for r in page["rows"] + rest
    )
    assert client.get("/api/pairs", params={"flag": "nonsense"}).status_code == 400
    pid = page["rows"][0]["pair_id"]
    detail = client.get(f"/api/pair/{pid}").json()
    assert detail["sides"]["chosen"]["annotations"]["helpfulness"]["rating"] == 5
    assert (
        client.post("/api/decisions", json={"pair_id": pid, "decision": "flip", "note": "n"}).status_code
        == 200
    )
    assert client.post("/api/decisions", json={"pair_id": pid, "decision": "maybe"}).status_code == 400
    assert client.post("/api/decisions", json={"pair_id": "nope", "decision": "flip"}).status_code == 404
    line = json.loads((out / "review" / "decisions.jsonl").read_text())
    assert line["pair_id"] == pid and line["decision"] == "flip" and line["reviewer"] == "ana"
    assert line["pair"]["chosen"] == page["rows"][0]["chosen"] and line["time"]
    assert client.get("/api/pairs", params={"decided": "flip"}).json()["total"] == 1
    agree = client.get("/api/overview").json()["reviewer_agreement"]["all judges"]
    assert agree["n"] == 1 and agree["agree"] == 0.0 and agree["ci_high"] < 1


def test_export_gold_keeps_what_a_rebuild_removed(built, tmp_path, capsys):
    from flows.review.index import RunIndex
    from flows.review.server import make_app

    out = fresh(built, tmp_path)
    from starlette.testclient import TestClient

    client = TestClient(make_app(RunIndex(out)), base_url="http://127.0.0.1")
    rows = client.get("/api/pairs", params={"limit": 3}).json()["rows"]
    for r, d in zip(rows, ("flip", "tie", "drop")):
        client.post("/api/decisions", json={"pair_id": r["pair_id"], "decision": d})
    rebuild(out)  # the tie and the drop leave the dataset; the decisions keep what was compared
    gold = tmp_path / "gold.jsonl"
    assert main(["review", str(out), "--export-gold", str(gold)]) == 0
    lines = [json.loads(x) for x in gold.read_text().splitlines()]
    assert [(g["pair_id"], g["tie"]) for g in lines] == [
        (rows[0]["pair_id"], False),
        (rows[1]["pair_id"], True),
    ]
    assert (lines[0]["chosen"], lines[0]["rejected"]) == (rows[0]["rejected"], rows[0]["chosen"])
    from flows.evals.judge_eval import load_pairs

    assert len(load_pairs(gold)) == 2  # judge-eval reads it as it is


def test_a_cross_site_form_cannot_record_a_decision(built, tmp_path):
    from starlette.testclient import TestClient

    from flows.review.index import RunIndex
    from flows.review.server import make_app

    out = fresh(built, tmp_path)
    client = TestClient(make_app(RunIndex(out)), base_url="http://127.0.0.1")
    pid = client.get("/api/pairs", params={"limit": 1}).json()["rows"][0]["pair_id"]
    body = json.dumps({"pair_id": pid, "decision": "drop"})
    assert (
        client.post("/api/decisions", content=body, headers={"content-type": "text/plain"}).status_code == 415
    )
    assert not (out / "review" / "decisions.jsonl").exists()
    rebound = client.get("/api/pairs", headers={"host": "evil.example:8790"})
    assert rebound.status_code == 400  # DNS rebinding: a request addressed to another name is refused
