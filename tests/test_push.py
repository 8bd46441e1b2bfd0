"""`rlaif push`: a real run (built against the deterministic chat stub, no vLLM) uploaded through the
CLI to a local recording Hub (tests/hub_stub.py: what huggingface_hub 2.4 sends); `--dry-run`, whose
listed files load by the card's `configs:`; bad input stops with one line before any request.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import uuid
from pathlib import Path

import pytest

from flows.hub.upload import hub_card, plan_push
from tests.helpers import write_jsonl
from tests.hub_stub import HubStub
from tests.unique_stub import CountingChatStub

ROOT = Path(__file__).resolve().parents[1]
TOKEN = f"hf_rlaifTestSecret{uuid.uuid4().hex}"  # fake; must never be printed or written
REPO = "rlaif-test/push-prefs"
DECISION = {"pair_id": "p-test", "decision": "flip", "note": "the shorter answer is right"}
SPLITS = ("train_prefs", "test_prefs", "train_sft", "test_sft")


def cli(*args: str, hf_home: Path, env: dict[str, str] | None = None) -> subprocess.CompletedProcess:
    """`python -m flows.cli ARGS` as a user runs it: no Hugging Face token unless `env` gives one
    (HF_HOME is a folder of the test's: no saved login), HF_HUB_OFFLINE=1 as the CLI defaults to."""
    drop = ("HF_TOKEN", "HUGGING_FACE_HUB_TOKEN", "HF_TOKEN_PATH", "HF_OIDC_RESOURCE", "HF_ENDPOINT")
    full = {**{k: v for k, v in os.environ.items() if k not in drop}, "HF_HUB_OFFLINE": "1",
            "HF_HOME": str(hf_home), "RLAIF_PROGRESS": "0",
            "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])]),
            **(env or {})}  # fmt: skip
    return subprocess.run([sys.executable, "-m", "flows.cli", *args], cwd=ROOT, env=full,
                          capture_output=True, text=True, timeout=300)  # fmt: skip


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory) -> Path:
    """A finished run: `rlaif run` of 8 prompts x 3 answers judged UltraFeedback-style, all on the
    deterministic chat stub (about 12 s), plus a review log."""
    tmp = tmp_path_factory.mktemp("push-run")
    chats = [[{"role": "user", "content": f"Question {i}: name a colour and say why."}] for i in range(8)]
    prompts = write_jsonl(tmp / "prompts.jsonl", [{"messages": m} for m in chats])
    out = tmp / "push-run"
    with CountingChatStub(mode="hash", max_words=12) as stub:
        ep = f"{{endpoints: [{{base_url: {stub.base_url}, model: stub}}]}}"
        recipe = tmp / "push.yaml"
        recipe.write_text(
            f"name: push-test\nprompts: {{path: {prompts}, column: messages}}\npolicy: {ep}\n"
            "sampling: {n: 3, seed: 1, max_tokens: 32}\n"
            f"judges:\n  - {{type: ultrafeedback, aspects: [helpfulness], max_tokens: 64, judge: {ep}}}\n"
            "binarize: {rule: best-vs-worst, test_fraction: 0.25, seed: 1}\n"
        )
        proc = cli("run", str(recipe), "--out", str(out), hf_home=tmp / "hf-home")
    assert proc.returncode == 0, proc.stdout[-2000:] + proc.stderr[-2000:]
    (out / "review").mkdir(exist_ok=True)
    write_jsonl(out / "review" / "decisions.jsonl", [DECISION])
    return out


@pytest.fixture
def hub():
    with HubStub() as stub:
        yield stub


def files_holding(folder: Path, secret: str) -> list[str]:
    return [str(p) for p in folder.rglob("*") if p.is_file() and secret.encode() in p.read_bytes()]


def test_push_creates_the_dataset_repo_and_uploads_the_run_in_one_commit(run_dir, hub, tmp_path):
    home = tmp_path / "hf-home"
    proc = cli("push", str(run_dir), "--repo", REPO, "--private", hf_home=home,
               env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    api = hub.api_requests()
    assert [(r.method, r.path) for r in api] == [
        ("POST", "/api/repos/create"),
        ("POST", "/api/validate-yaml"),
        ("POST", f"/api/datasets/{REPO}/preupload/main"),
        ("POST", f"/api/datasets/{REPO}/commit/main"),
    ]
    assert api[0].json_body() == {"name": "push-prefs", "organization": "rlaif-test", "type": "dataset",
                                  "visibility": "private"}  # fmt: skip
    assert all(r.headers.get("authorization") == f"Bearer {TOKEN}" for r in api)

    # one commit holding exactly the planned files, byte for byte: the card, every Parquet file, the
    # report plot, the review log; never summary.json / build.json (local paths, endpoint URLs)
    (commit,) = hub.commits
    assert (commit.kind, commit.repo_id, commit.revision) == ("datasets", REPO, "main")
    assert commit.summary == f"rlaif push: {run_dir.name}"
    want = ["README.md", *(f"parquet/binarized/{s}.parquet" for s in sorted(SPLITS)),
            "parquet/ultrafeedback/train.parquet", "report/scores.png", "review/decisions.jsonl"]  # fmt: skip
    assert sorted(commit.files) == sorted(want) == sorted(f.path_in_repo for f in plan_push(run_dir).files)
    for path, data in commit.files.items():  # the card's usage lines name the repo, not the local folder
        local = (run_dir / path).read_bytes()
        assert data == (hub_card(local.decode(), REPO).encode() if path == "README.md" else local), path
    hub_readme = commit.files["README.md"].decode()
    assert f"load_dataset('{REPO}', 'binarized')" in hub_readme and "load_from_disk" not in hub_readme
    assert f"pushed {len(want)} files" in proc.stdout

    # the token: sent as the Authorization header, and nowhere else
    assert TOKEN not in proc.stdout + proc.stderr
    assert files_holding(run_dir, TOKEN) == files_holding(home, TOKEN) == []
    for r in hub.requests:  # api ones and huggingface_hub's own look-ups
        assert TOKEN.encode() not in r.body and TOKEN not in r.path
        assert all(TOKEN not in v for k, v in r.headers.items() if k != "authorization")

    # again without --private: the repo exists (409, kept as it is), no visibility asked, a second commit
    proc = cli(
        "push", str(run_dir), "--repo", REPO, hf_home=home, env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN}
    )
    assert proc.returncode == 0, proc.stderr
    creates = [r.json_body() for r in hub.api_requests() if r.path == "/api/repos/create"]
    assert creates[1] == {"name": "push-prefs", "organization": "rlaif-test", "type": "dataset"}
    assert len(hub.commits) == 2 and hub.commits[1].files == commit.files
    assert TOKEN not in proc.stdout + proc.stderr


def test_dry_run_lists_the_files_and_the_card_header_and_they_load_by_config(run_dir, hub, tmp_path):
    proc = cli("push", str(run_dir), "--repo", REPO, "--dry-run", hf_home=tmp_path / "hf-home",
               env={"HF_ENDPOINT": hub.url})  # no token needed  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert hub.requests == []
    lines = proc.stdout.splitlines()
    assert "nothing was uploaded" in lines[-1]
    listed = [line.split()[0] for line in lines if line.startswith("  ") and line.endswith(" bytes")]
    assert sorted(
        p.relative_to(run_dir).as_posix() for p in (run_dir / "parquet").rglob("*.parquet")
    ) == sorted(p for p in listed if p.endswith(".parquet"))
    card = (run_dir / "README.md").read_text()
    header = card[: card.index("\n---\n", 4) + 5]  # the card's YAML header, --- lines included
    assert header in proc.stdout and "configs:" in header

    # the listed files alone make a dataset that loads by the card's configs, with the run's rows
    import datasets

    folder = tmp_path / "as-on-the-hub"
    for path in listed:
        (folder / path).parent.mkdir(parents=True, exist_ok=True)
        shutil.copyfile(run_dir / path, folder / path)
    cache = str(tmp_path / "hf-cache")
    build = json.loads((run_dir / "build.json").read_text())
    binarized = datasets.load_dataset(str(folder), "binarized", cache_dir=cache)
    assert {s: binarized[s].num_rows for s in binarized} == {s: n for s, n in build["pairs"].items() if n}
    assert build["pairs"]["train_prefs"] > 0
    uf = datasets.load_dataset(str(folder), "ultrafeedback", cache_dir=cache)
    assert uf["train"].num_rows == datasets.load_from_disk(str(run_dir / "ultrafeedback")).num_rows == 8


def without_build_json(run_dir: Path, tmp: Path) -> Path:
    copy = tmp / "unfinished"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("shards", "build.json"))
    return copy


def card_names_a_missing_file(run_dir: Path, tmp: Path) -> Path:
    copy = tmp / "broken"
    shutil.copytree(run_dir, copy, ignore=shutil.ignore_patterns("shards"))
    (copy / "parquet" / "ultrafeedback" / "train.parquet").unlink()
    return copy


BAD = {
    "no such folder": (lambda run, tmp: tmp / "nowhere", [], "no such folder"),
    "a file, not a folder": (lambda run, tmp: run / "summary.json", [], "not a folder"),
    "a run without build.json": (without_build_json, [], "not a finished rlaif run (no build.json)"),
    "card names a missing file": (card_names_a_missing_file, [], "train.parquet does not exist"),
    "--repo without a slash": (lambda run, tmp: run, ["--repo", "push-prefs"], "expected ORG/NAME"),
    "--repo with two slashes": (lambda run, tmp: run, ["--repo", "a/b/c"], "expected ORG/NAME"),
    "--repo with a space": (lambda run, tmp: run, ["--repo", "org/my prefs"], "expected ORG/NAME"),
    "no token": (lambda run, tmp: run, [], "set HF_TOKEN"),
}


@pytest.mark.parametrize("case", list(BAD))
def test_bad_input_is_one_line_and_sends_nothing(case, run_dir, hub, tmp_path):
    make_run, args, says = BAD[case]
    run = make_run(run_dir, tmp_path)
    repo = [] if "--repo" in args else ["--repo", REPO]
    proc = cli(
        "push", str(run), *repo, *args, hf_home=tmp_path / "empty-hf-home", env={"HF_ENDPOINT": hub.url}
    )
    assert proc.returncode == 2, proc.stdout + proc.stderr
    assert proc.stdout == ""
    assert proc.stderr.count("\n") == 1 and proc.stderr.startswith("rlaif: error: "), proc.stderr
    assert says in proc.stderr
    assert hub.requests == []
    if case == "no token":
        assert "hf auth login" in proc.stderr


class RefusingHub(HubStub):
    """A Hub that refuses the token, as huggingface.co does a revoked one."""

    def _answer(self, rec, base):
        return 401, {"error": "Invalid credentials in Authorization header"}


def test_a_refused_token_is_one_line_without_the_token(run_dir, tmp_path):
    with RefusingHub() as hub:
        proc = cli("push", str(run_dir), "--repo", REPO, hf_home=tmp_path / "hf-home",
                   env={"HF_ENDPOINT": hub.url, "HF_TOKEN": TOKEN})  # fmt: skip
        # create_repo(exist_ok=True) takes a 401/403 for "maybe it exists": it asks for the repo, then gives up
        assert [r.path for r in hub.api_requests()] == ["/api/repos/create", f"/api/datasets/{REPO}"]
    assert proc.returncode == 2 and proc.stdout == ""
    assert proc.stderr.count("\n") == 1, proc.stderr
    assert "HTTP 401: Invalid credentials" in proc.stderr and "is the token valid?" in proc.stderr
    assert TOKEN not in proc.stderr
