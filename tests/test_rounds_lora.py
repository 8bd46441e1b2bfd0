"""LoRA rounds and reward -> PPO rounds of `rlaif iterate`: one vLLM start for a whole 2-round run, each
round's adapter loaded into that running server, round 2's completions named after round 1's adapter,
resume after kill -9 in round 2's generation, and a PPO round (reward model on its own pairs) end to end."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
from collections import Counter
from pathlib import Path

import pytest
from datasets import load_from_disk

import tests.length_judge  # noqa: F401 - registers the `chars` judge
from flows.cli import main
from serving.lora import LoraServing, adapter_sha256, loaded_adapters, unload_adapter
from serving.models import DEFAULT_MODEL, rlaif_home
from serving.vllm import VllmServer
from tests.helpers import journal_lines, wait_for, write_jsonl
from tests.stubs import FaultProxy

RUN_PORT = 8768  # recipes that are only read (no server there)
SHARED_PORT = 8769  # the one server this module starts (LoRA enabled): every run here reuses it
WORDS = ("a fruit", "a colour", "an animal", "a city", "a planet", "a metal", "a tree", "a sport")


def lora_recipe(tmp: Path, port: int, train: str = "", rounds: str = "") -> Path:
    prompts = write_jsonl(tmp / "pool.jsonl", [{"prompt": f"Name {w} in one word."} for w in WORDS])
    p = tmp / "lora.yaml"
    p.write_text(f"""name: lora-rounds
prompts: {{path: {prompts}}}
policy: {{port: {port}}}
sampling: {{n: 2, max_tokens: 12, temperature: 1.0}}
judges: [{{type: chars, per_char: -1.0}}]  # the shorter answer wins; scored locally
binarize: {{rule: best-vs-worst, test_fraction: 0.0}}
lints: {{allow_truncated_chosen: true}}
train: {{method: dpo, max_steps: 1, batch_size: 2, max_length: 64, learning_rate: 1.0e-3, lora: {{r: 8}}{train}}}
rounds: {{count: 2, prompts_per_round: 3, eval_prompts: 2, eval_max_tokens: 12{rounds}}}
""")
    return p


def models_of(rdir: Path) -> set[str]:
    return {c["model"] for row in load_from_disk(str(rdir / "ultrafeedback")) for c in row["completions"]}


def round_json(out: Path, k: int) -> dict:
    return json.loads((out / f"round-{k}" / "round.json").read_text())


def is_generation(req: dict) -> bool:
    """A round's sampling request (seeded), not a held-out answer (greedy) nor an adapter load."""
    return "messages" in req and "seed" in req


def alive(proc: subprocess.Popen, err: Path) -> bool:
    """True while `proc` runs; fails at once, quoting its stderr, when it has exited."""
    assert proc.poll() is None, f"the run exited early with code {proc.returncode}: {err.read_text()[-2000:]}"
    return True


@pytest.fixture(scope="module")
def shared_server():
    """One LoRA-enabled server for the module (a vLLM start is ~2 min here); what a run would start is
    `test_the_policy_server_a_lora_run_starts_takes_adapters`."""
    with VllmServer(None, port=SHARED_PORT, lora=LoraServing(max_rank=8)) as server:
        yield server


@pytest.fixture(scope="module")
def lora_run(shared_server, tmp_path_factory):
    tmp = tmp_path_factory.mktemp("lora-rounds")
    out = tmp / "out"
    starts = VllmServer.starts
    code = main(["iterate", str(lora_recipe(tmp, SHARED_PORT)), "--out", str(out)])
    return code, VllmServer.starts - starts, out


def test_the_policy_server_a_lora_run_starts_takes_adapters(tmp_path):
    from flows.recipe import load_recipe
    from flows.rounds.loop import lora_serving, policy_base_server

    recipe = load_recipe(lora_recipe(tmp_path, RUN_PORT))
    server = policy_base_server(recipe, lora_serving(recipe, []))
    cmd = server.command("/models/base")
    assert "--enable-lora" in cmd and cmd[cmd.index("--max-lora-rank") + 1] == "8" and server.port == RUN_PORT
    assert server.lora is not None and server.lora.env() == {"VLLM_ALLOW_RUNTIME_LORA_UPDATING": "True"}


def test_two_lora_rounds_restart_nothing_and_load_adapters_at_runtime(lora_run):
    code, starts, out = lora_run
    assert code == 0
    assert starts == 0  # the running base server takes both rounds' adapters; judges share it
    r1, r2 = round_json(out, 1), round_json(out, 2)
    adapter1 = out / "round-1" / "models" / "dpo"
    assert (adapter1 / "adapter_config.json").is_file() and not (adapter1 / "config.json").exists()
    sha1 = adapter_sha256(adapter1)
    assert r1["trained"] == {"model": str(adapter1.resolve()), "sha256": sha1, "served_as": f"round-1@{sha1[:12]}",
                             "round": 1, "adapter": True}  # fmt: skip
    assert r2["policy"] == r1["trained"] and r2["trained"]["adapter"] and r2["trained"]["sha256"] != sha1
    # round 2's requests named round 1's adapter: the completions (and the journal keys) carry its hash
    assert models_of(out / "round-1") == {DEFAULT_MODEL}
    assert models_of(out / "round-2") == {f"round-1@{sha1[:12]}"}
    for r in (r1, r2):  # each round loaded its own trained adapter for its evaluation; nothing restarted
        assert r["timing"]["server_starts"] == 0 and r["timing"]["adapter_loads"] == 1
        assert r["method"] == "dpo" and r["vs_base"]["n"] == r["vs_previous"]["n"] == 2
    log = (rlaif_home() / "logs" / f"vllm-{SHARED_PORT}.log").read_text()  # written since the module's start
    assert log.count('"POST /v1/load_lora_adapter HTTP/1.1" 200') == 2
    card = (out / "round-2" / "README.md").read_text()
    assert "a LoRA adapter, served by name on the base policy's vLLM" in card and sha1 in card


def test_lora_rounds_resume_after_kill_9_in_round_two(shared_server, tmp_path):
    """kill -9 while round 2's generation has requests in flight (a proxy in front of the server holds
    every one after the second), then re-run: round 1 is read back, round 2 sends only what its journal
    lacks, and round 1's adapter is loaded again (unloaded in between, as a fresh server would be)."""
    server = shared_server
    release, loads, gen = threading.Event(), [], Counter()

    def hold(req: dict, n: int) -> None:
        if "lora_path" in req:
            loads.append(req["lora_name"])
        if is_generation(req) and req.get("model", "").startswith("round-1@"):
            gen["round2"] += 1
            if gen["round2"] > 2 and not release.is_set():
                release.wait(600)

    with FaultProxy(server.base_url, hold) as proxy:
        path, out, err = lora_recipe(tmp_path, proxy.port), tmp_path / "out", tmp_path / "stderr.txt"
        code = "import sys, tests.length_judge; from flows.cli import main; sys.exit(main(sys.argv[1:]))"
        with err.open("w") as fh:
            proc = subprocess.Popen([sys.executable, "-c", code, "iterate", str(path), "--out", str(out)],
                                    env={**os.environ, "RLAIF_PROGRESS": "0"}, stdout=subprocess.DEVNULL,
                                    stderr=fh, start_new_session=True)  # fmt: skip
        try:
            wait_for(lambda: alive(proc, err) and len(journal_lines(out / "round-2", "generate")) >= 2
                     and gen["round2"] > 2, 1200, "round 2's generation with a request held")  # fmt: skip
        finally:
            os.killpg(proc.pid, signal.SIGKILL)  # the run and everything it started
            proc.wait()
            release.set()
        journalled = len(journal_lines(out / "round-2", "generate"))
        assert journalled < 6 and not (out / "round-2" / "round.json").exists()
        r1_mtime, r1_lines = (
            (out / "round-1" / "round.json").stat().st_mtime,
            len(journal_lines(out / "round-1")),
        )
        for name in loaded_adapters(server.base_url):  # as after a restart: the server holds no adapter
            unload_adapter(server.base_url, name)
        loads.clear()
        before = gen["round2"]
        assert main(["iterate", str(path), "--out", str(out)]) == 0
        resent = gen["round2"] - before
    sha1 = round_json(out, 1)["trained"]["sha256"]
    assert (out / "round-1" / "round.json").stat().st_mtime == r1_mtime  # round 1 was not redone
    assert len(journal_lines(out / "round-1")) == r1_lines
    assert resent == 6 - journalled  # only what was in flight (or not yet sent) went again
    assert loads[0] == f"round-1@{sha1[:12]}"  # the adapter was loaded again before round 2's requests
    keys = Counter(r["k"] for r in journal_lines(out / "round-2", "generate"))
    assert all(n == 1 for n in keys.values())
    assert models_of(out / "round-2") == {f"round-1@{sha1[:12]}"}


def test_a_reward_then_ppo_round_runs_end_to_end(shared_server, tmp_path):
    """A PPO round: a reward model trained on the round's own pairs, then PPO (a LoRA adapter), served on
    the running base server and judged against the base like any round."""
    path = lora_recipe(tmp_path, SHARED_PORT, train=", response_length: 8, reward_training: {max_steps: 1}",
                       rounds=", count: 1")  # fmt: skip
    path.write_text(path.read_text().replace("method: dpo", "method: ppo").replace("test_fraction: 0.0",
                                                                                  "test_fraction: 0.34"))  # fmt: skip
    out = tmp_path / "out"
    assert main(["iterate", str(path), "--out", str(out)]) == 0
    r1 = round_json(out, 1)
    assert r1["method"] == "ppo" and r1["trained"]["adapter"] and r1["vs_base"]["n"] == 2
    reward = out / "round-1" / "models" / "reward"
    assert (reward / "reward_normalization.json").is_file() and (reward / "config.json").is_file()
    summary = json.loads((out / "round-1" / "summary.json").read_text())["train"]
    assert summary["reward_model"] == str(reward) and summary["method"] == "ppo"
    assert summary["reward_test_accuracy"] == r1["reward_accuracy"] is not None
    assert (out / "round-1" / "models" / "ppo" / "adapter_config.json").is_file()


def test_adapters_train_on_from_a_previous_one_and_are_saved_alone(tiny_model, arith_dataset, tmp_path):
    """What each LoRA round's training does: DPO saves the adapter alone (no merged weights, not the
    trainer's frozen "ref" copy); the next round trains on from it; PPO takes an adapter the same way."""
    from flows.training.train_flow import train_method

    common = {"model": str(tiny_model), "dataset": str(arith_dataset), "max_steps": 1, "batch_size": 2,
              "max_length": 64, "lora": True, "lora_r": 8, "save_adapter": True, "learning_rate": 1e-2}  # fmt: skip
    first = train_method("dpo", output=str(tmp_path / "a1"), **common)
    second = train_method("dpo", output=str(tmp_path / "a2"), lora_adapter=str(first), **common)
    for folder in (first, second):
        assert (folder / "adapter_model.safetensors").is_file() and not (folder / "config.json").exists()
        assert not (folder / "ref").exists()
    assert adapter_sha256(first) != adapter_sha256(second)
    reward = train_method("reward", output=str(tmp_path / "rm"), model=str(tiny_model), dataset=str(arith_dataset),
                          max_steps=1, batch_size=2, max_length=64)  # fmt: skip
    ppo = train_method("ppo", output=str(tmp_path / "p"), lora_adapter=str(second), reward_model=str(reward),
                       response_length=4, **common)  # fmt: skip
    assert (ppo / "adapter_config.json").is_file() and adapter_sha256(ppo) != adapter_sha256(second)


def test_the_journal_key_of_an_adapter_round_carries_the_adapter_hash(tmp_path):
    """Round k's generation is keyed by the adapter's name@hash: a retrained adapter never replays."""
    from flows.engine.plan import make_plan
    from flows.recipe import load_recipe
    from flows.rounds.loop import Policy, round_recipe

    recipe = load_recipe(lora_recipe(tmp_path, RUN_PORT))
    keys = []
    for sha in ("a" * 64, "b" * 64):
        policy = Policy(model=str(tmp_path / "adapter"), sha256=sha, served_as=f"round-1@{sha[:12]}", round=1,
                        adapter=True)  # fmt: skip
        rr = round_recipe(recipe, 2, policy, tmp_path / "pool.jsonl", tmp_path / "out")
        assert rr.policy.endpoint_list()[0].base_url == f"http://127.0.0.1:{RUN_PORT}/v1"  # the base server
        assert rr.train.lora.start_from == policy.model and rr.train.model == recipe.policy.model
        plan = make_plan(
            rr, tmp_path / "out", {k: m.endpoint_list() for k, m in rr.served_by_stage().items()}
        )
        keys.append(plan.model_key(plan.policy_model))
    assert keys == ["round-1@aaaaaaaaaaaa", "round-1@bbbbbbbbbbbb"]


@pytest.mark.parametrize(
    ("edits", "field"),
    [({"policy: {port: 8768}": "policy: {endpoints: [{base_url: 'http://127.0.0.1:9/v1', model: m}]}",
       "train: {": "train: {model: smollm2-135m-instruct, "}, "train.lora"),
     ({"method: dpo": "method: reward", "lora: {r: 8}": "lora: {r: 8, merge: true}"}, "train.method"),
     ({"lora: {r: 8}": "lora_r: 8"}, "train.lora_r")],
)  # fmt: skip
def test_bad_lora_or_ppo_rounds_are_refused_when_the_recipe_is_read(tmp_path, capsys, edits, field):
    recipe = lora_recipe(tmp_path, RUN_PORT, rounds=", reload_command: 'true'")
    text = recipe.read_text()
    for old, new in edits.items():
        text = text.replace(old, new)
    recipe.write_text(text)
    assert main(["iterate", str(recipe), "--out", str(tmp_path / "out")]) == 2
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and field in err and str(recipe) in err
    assert not (tmp_path / "out").exists()
