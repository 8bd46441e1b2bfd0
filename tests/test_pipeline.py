"""`rlaif run` end to end on the real server: datasets on disk that TRL accepts as they are."""

from __future__ import annotations

import json
import socket
from pathlib import Path

import pytest

from flows.cli import main
from tests.helpers import journal_records, write_jsonl

PROMPTS = [{"prompt": "Name a fruit that is yellow."}, {"prompt": "What is 3 times 4?"},
           {"prompt": "Give a one-line tip for sleeping well."}]  # fmt: skip


def recipe(tmp_path: Path, port: int, extra: str = "", prompts: list | None = None, n: int = 3) -> Path:
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS if prompts is None else prompts)
    text = f"""name: t
prompts:
  path: {data}
policy:
  port: {port}
sampling:
  n: {n}
  max_tokens: 24
shard_size: 2
judges:
  - type: ultrafeedback
  - type: pairwise
    max_tokens: 48
    compare: all  # every pair (the exact request count below); tests/test_judge_spend.py checks `auto`
binarize:
  keep_ties: true
  test_fraction: 0.34
{extra}"""
    p = tmp_path / "r.yaml"
    p.write_text(text)
    return p


def test_run_builds_trl_ready_datasets(vllm_server, tmp_path, tiny_model):
    import datasets
    from trl import DPOConfig, DPOTrainer

    out = tmp_path / "out"
    constitution = Path(__file__).resolve().parents[1] / "constitutions" / "harmless.yaml"
    extra = (f"critique:\n  constitution: {constitution}\n  mode: critique\n  max_tokens: 24\n"
             f"train:\n  method: sft\n  model: {tiny_model}\n  max_steps: 1\n  batch_size: 1\n")  # fmt: skip
    assert main(["run", str(recipe(tmp_path, vllm_server.port, extra)), "--out", str(out)]) == 0
    uf = datasets.load_from_disk(str(out / "ultrafeedback"))
    assert len(uf) == 3
    for row in uf:
        assert len(row["completions"]) == 3
        for c in row["completions"]:
            assert set(c["scores"]) == {"ultrafeedback", "pairwise"}
            assert c["fine_grained_score"] is None or 1 <= c["fine_grained_score"] <= 5
        assert row["provenance"]["policy"] == "smollm2-135m-instruct"
        assert len(row["pairwise_verdicts"]) == 3  # 3 pairs of 3 completions
    b = datasets.load_from_disk(str(out / "binarized"))
    assert set(b) == {"train_prefs", "test_prefs", "train_sft", "test_sft"}
    assert len(b["train_prefs"]) + len(b["test_prefs"]) >= 1
    for split in ("train_prefs", "test_prefs"):
        for r in b[split]:
            assert r["prompt"][0]["role"] == "user" and r["chosen"][0]["role"] == "assistant"
            assert r["margin"] == pytest.approx(r["score_chosen"] - r["score_rejected"])
    train_ids = set(b["train_prefs"]["prompt_id"]) | set(b["train_sft"]["prompt_id"])
    assert not train_ids & (set(b["test_prefs"]["prompt_id"]) | set(b["test_sft"]["prompt_id"]))
    assert (out / "parquet" / "binarized" / "train_prefs.parquet").exists()
    card = (out / "README.md").read_text()
    assert "position consistency" in card and "Length bias" in card and "tiny model" in card
    assert (out / "report" / "scores.png").stat().st_size > 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["stages"]["judge"]["requests"] == 3 * 4 + 3 * 3 * 2
    assert not [p for p in out.rglob("*") if p.name.startswith(".build-")]
    assert summary["train"]["method"] == "sft" and Path(summary["train"]["output"]) == out / "models" / "sft"
    assert (out / "models" / "sft" / "config.json").exists()
    from judges.constitution_file import load_constitution

    assert "## Constitution" in card and load_constitution(constitution).sha256[:16] in card
    # the file by name: a card goes to the Hub as it is, and this machine's folders are nobody's business
    assert f"(file `{Path(constitution).name}`)" in card and str(Path(constitution).parent) not in card
    assert summary["stages"]["critique"]["rows"] == 9  # one sampled principle per completion
    # the constitution is a judge like the others: its own figures and a row in the card's judge table
    const = summary["build"]["judges"]["constitution"]
    assert (
        const["type"] == "constitution"
        and const["requests"] > 0
        and "| constitution | constitution |" in card
    )
    origins = set(b["train_prefs"]["origin"]) | set(b["test_prefs"]["origin"])
    assert "judge" in origins

    # TRL accepts binarized/train_prefs as is
    from transformers import AutoModelForCausalLM, AutoTokenizer

    train = b["train_prefs"] if len(b["train_prefs"]) else b["test_prefs"]
    tok = AutoTokenizer.from_pretrained(tiny_model)
    args = DPOConfig(output_dir=str(tmp_path / "dpo"), max_steps=1, per_device_train_batch_size=1, use_cpu=True,
                     bf16=False, report_to="none", max_length=128, save_strategy="no")  # fmt: skip
    trainer = DPOTrainer(model=AutoModelForCausalLM.from_pretrained(tiny_model), args=args,
                         train_dataset=train, processing_class=tok)  # fmt: skip
    assert trainer.train().global_step == 1

    # the same dataset loads Hub-style from the card's configs (splits without rows are left out)
    again = datasets.load_dataset(str(out), "binarized", cache_dir=str(tmp_path / "hf-cache"))
    assert again.num_rows == {s: n for s, n in b.num_rows.items() if n}

    # a re-run of the finished run does not train again; another train field does
    weights = out / "models" / "sft" / "model.safetensors"
    stamp = (weights.stat().st_ino, weights.stat().st_mtime_ns)
    assert not summary["train"]["cached"]
    assert main(["run", str(recipe(tmp_path, vllm_server.port, extra)), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["train"]["cached"] is True
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) == stamp
    more = extra.replace("max_steps: 1", "max_steps: 2")
    assert main(["run", str(recipe(tmp_path, vllm_server.port, more)), "--out", str(out)]) == 0
    assert json.loads((out / "summary.json").read_text())["train"]["cached"] is False
    assert (weights.stat().st_ino, weights.stat().st_mtime_ns) != stamp


def test_empty_input_finishes_with_empty_dataset(vllm_server, tmp_path):
    out = tmp_path / "out"
    path = recipe(tmp_path, vllm_server.port, prompts=[{"prompt": ""}, {"prompt": "   "}])
    assert main(["run", str(path), "--out", str(out)]) == 0
    import datasets

    assert datasets.load_from_disk(str(out / "binarized"))["train_prefs"].num_rows == 0
    assert json.loads((out / "summary.json").read_text())["stages"]["generate"]["skipped"] == {"empty": 2}


def test_single_completion_gives_no_pair_and_is_counted(vllm_server, tmp_path):
    out = tmp_path / "out"
    path = recipe(tmp_path, vllm_server.port, prompts=PROMPTS[:2], n=1)
    assert main(["run", str(path), "--out", str(out)]) == 0
    summary = json.loads((out / "summary.json").read_text())
    assert summary["build"]["stats"]["too_few_completions"] == 2
    assert "prompts with < 2 completions (no pair) | 2" in (out / "README.md").read_text()


def test_judge_endpoint_down_names_it_and_keeps_finished_work(vllm_server, tmp_path, capsys):
    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    out = tmp_path / "out"
    assert main(["generate", str(recipe(tmp_path, vllm_server.port)), "--out", str(out), "--limit", "1"]) == 0
    journal = journal_records(out)
    extra = f"""  - type: ultrafeedback
    name: remote
    judge:
      endpoints:
        - base_url: {dead}
          model: big-judge
"""
    path = recipe(tmp_path, vllm_server.port)
    path.write_text(path.read_text().replace("binarize:", extra + "binarize:"))
    assert main(["run", str(path), "--out", str(out), "--limit", "1"]) == 2
    err = capsys.readouterr().err
    assert dead in err and err.strip().count("\n") == 0
    assert journal_records(out) == journal  # finished completions kept, nothing re-sent or lost
    assert "remote" not in (out / "build.json").read_text()  # the failed run built nothing


def test_stage_error_is_one_line_without_prompt_text(vllm_server, tmp_path, capsys):
    from tests.stubs import FaultProxy

    secret_prompt = "Describe the purple elephant named Zanzibar-7."
    with FaultProxy(vllm_server.base_url, lambda req, n: (500, {"error": {"message": "boom"}}, {})) as judge:
        extra = (f"  - type: ultrafeedback\n    name: broken\n    judge:\n      endpoints:\n"
                 f"        - base_url: {judge.base_url}\n          model: {vllm_server.model_name}\n"
                 "client:\n  max_retries: 1\n  backoff_base_s: 0.01\n")  # fmt: skip
        path = recipe(tmp_path, vllm_server.port, prompts=[{"prompt": secret_prompt}], n=2)
        path.write_text(path.read_text().replace("binarize:", extra + "binarize:"))
        assert main(["run", str(path), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and judge.base_url in err and "HTTP 500" in err
    assert "Zanzibar" not in err and "elephant" not in err


def test_rerun_of_finished_run_needs_no_server(vllm_server, tmp_path, capsys):
    """A finished run re-run sends nothing, so it needs no model server and no Prefect flow run:
    the policy endpoint is dead on the re-run and the datasets come out the same."""
    import datasets

    s = socket.socket()
    s.bind(("127.0.0.1", 0))
    dead = f"http://127.0.0.1:{s.getsockname()[1]}/v1"
    s.close()
    out = tmp_path / "out"
    path = recipe(tmp_path, vllm_server.port, prompts=PROMPTS[:2], n=2)
    live = path.read_text().replace(
        f"policy:\n  port: {vllm_server.port}\n",
        f"policy:\n  endpoints:\n    - base_url: {vllm_server.base_url}\n      model: {vllm_server.model_name}\n",
    )
    path.write_text(live)
    assert main(["run", str(path), "--out", str(out)]) == 0
    first = {k: v.to_dict() for k, v in datasets.load_from_disk(str(out / "binarized")).items()}
    path.write_text(live.replace(vllm_server.base_url, dead))
    capsys.readouterr()
    assert main(["run", str(path), "--out", str(out)]) == 0
    last = capsys.readouterr().out.strip().splitlines()[-1]
    assert last.startswith("done: 2 prompts, 4 completions") and "(all from the run's journal)" in last
    summary = json.loads((out / "summary.json").read_text())
    assert summary["total_s"] >= summary["wall_s"]  # the closing line's time is the whole command's
    assert summary["engine"]["flow_run"].startswith("none")
    assert summary["stages"]["generate"]["requests"] == 0 and summary["stages"]["judge"]["requests"] == 0
    assert {k: v.to_dict() for k, v in datasets.load_from_disk(str(out / "binarized")).items()} == first
