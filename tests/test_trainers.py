"""Trainers on a build output: SFT, DPO, reward and PPO run (tiny random model), outputs load back."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from serving.errors import DataError, ModelError
from trainers import dpo, ppo, reward, sft


def test_sft_two_steps(tiny_model, arith_dataset, tmp_path):
    from transformers import AutoModelForCausalLM

    out = sft.train(sft.SFTTrainConfig(model=str(tiny_model), dataset=str(arith_dataset),
                                       output=str(tmp_path / "sft"), max_steps=2, batch_size=2))  # fmt: skip
    AutoModelForCausalLM.from_pretrained(out)
    m = json.loads((out / "metrics.json").read_text())
    assert m["method"] == "sft" and any("loss" in e for e in m["log_history"])
    assert (out / "curves.png").stat().st_size > 0


def test_dpo_two_steps(tiny_model, arith_dataset, tmp_path):
    from transformers import AutoModelForCausalLM

    out = dpo.train(dpo.DPOTrainConfig(model=str(tiny_model), dataset=str(arith_dataset),
                                       output=str(tmp_path / "dpo"), max_steps=2, batch_size=2))  # fmt: skip
    AutoModelForCausalLM.from_pretrained(out)
    m = json.loads((out / "metrics.json").read_text())
    assert 0 <= m["preference_accuracy_before"] <= 1 and 0 <= m["preference_accuracy_after"] <= 1


def test_reward_model_learns_an_easy_preference(tiny_model, arith_dataset, tmp_path):
    from transformers import AutoModelForSequenceClassification

    out = reward.train(reward.RewardTrainConfig(
        model=str(tiny_model), dataset=str(arith_dataset), output=str(tmp_path / "rm"), max_steps=40,
        batch_size=8, learning_rate=3e-3, use_margin=True))  # fmt: skip
    AutoModelForSequenceClassification.from_pretrained(out, num_labels=1)
    m = json.loads((out / "metrics.json").read_text())
    assert m["test_pairs"] >= 8
    assert m["test_accuracy"] >= 0.8, m  # chance is 0.5
    norm = json.loads((out / "reward_normalization.json").read_text())
    assert norm["std"] > 0
    # from the raw texts, not the dataset's labels: a chosen/rejected swap in build or in the trainer
    # would make the model prefer the bare wrong number here
    import asyncio

    from judges.contract import Prompt, as_completions
    from judges.registry import make_judge, parse_judge_config

    judge = make_judge(parse_judge_config({"type": "reward_model", "reward_model": str(out)}))
    wins = 0
    for k, (a, b) in enumerate([(3, 4), (12, 30), (25, 17), (8, 41), (33, 9), (19, 22)]):
        good, bad = f"Sure! {a} + {b} = {a + b}.", f"{a + b + 3 + k}"
        q = f"What is {a} + {b}?"
        prompt = Prompt(prompt_id=f"t{k}", prompt=q, messages=[{"role": "user", "content": q}])
        s = asyncio.run(judge.judge(prompt, as_completions([good, bad]))).scores
        wins += s[0] > s[1]
    assert wins >= 5, wins


@pytest.fixture(scope="module")
def small_reward_model(tiny_model, arith_dataset, tmp_path_factory) -> Path:
    return reward.train(reward.RewardTrainConfig(model=str(tiny_model), dataset=str(arith_dataset),
                                                 output=str(tmp_path_factory.mktemp("rm") / "rm"),
                                                 max_steps=2, batch_size=2))  # fmt: skip


def test_ppo_two_steps(tiny_model, arith_dataset, small_reward_model, tmp_path):
    from transformers import AutoModelForCausalLM

    out = ppo.train(ppo.PPOTrainConfig(model=str(tiny_model), dataset=str(arith_dataset),
                                       output=str(tmp_path / "ppo"), max_steps=2, batch_size=2,
                                       reward_model=str(small_reward_model), response_length=8))  # fmt: skip
    AutoModelForCausalLM.from_pretrained(out)
    m = json.loads((out / "metrics.json").read_text())
    assert len(m["reward_curve"]) >= 1 and len(m["kl_curve"]) >= 1


def test_ppo_without_reward_model_fails_and_writes_nothing(tiny_model, arith_dataset, tmp_path):
    with pytest.raises(ModelError, match="PPO needs a reward model"):
        ppo.train(
            ppo.PPOTrainConfig(model=str(tiny_model), dataset=str(arith_dataset), output=str(tmp_path / "p"))
        )
    assert not (tmp_path / "p").exists()


def test_dataset_without_columns_names_the_column(tiny_model, tmp_path):
    import datasets

    d = tmp_path / "ds"
    datasets.DatasetDict({"train_prefs": datasets.Dataset.from_dict({"prompt": [[{"role": "user", "content": "x"}]],
                                                                     "chosen": [[{"role": "assistant", "content": "y"}]]})
                          }).save_to_disk(str(d))  # fmt: skip
    with pytest.raises(DataError, match=r"lacks column\(s\) \['rejected'\]"):
        dpo.train(dpo.DPOTrainConfig(model=str(tiny_model), dataset=str(d), output=str(tmp_path / "o")))
    assert not (tmp_path / "o").exists()


def test_model_path_that_is_not_a_model(arith_dataset, tmp_path):
    (tmp_path / "nm").mkdir()
    with pytest.raises(ModelError, match="not a model folder"):
        dpo.train(
            dpo.DPOTrainConfig(
                model=str(tmp_path / "nm"), dataset=str(arith_dataset), output=str(tmp_path / "o")
            )
        )
    assert not (tmp_path / "o").exists()


def test_zero_pairs_is_a_clear_error(tiny_model, tmp_path):
    from flows.dataset.build import build
    from flows.dataset.schema import uf_features
    from flows.recipe import BinarizeSpec

    (tmp_path / "empty").mkdir()
    build(tmp_path / "empty", [], BinarizeSpec(), None, uf_features([], []).arrow_schema, {})
    with pytest.raises(DataError, match="zero rows"):
        dpo.train(
            dpo.DPOTrainConfig(
                model=str(tiny_model), dataset=str(tmp_path / "empty"), output=str(tmp_path / "o")
            )
        )
    assert not (tmp_path / "o").exists()


def test_reward_model_judge_scores_a_second_round(small_reward_model, arith_dataset, tmp_path):
    import asyncio

    from judges.contract import Prompt, as_completions
    from judges.registry import make_judge, parse_judge_config
    from tests.helpers import uf_rows

    config = parse_judge_config({"type": "reward_model", "reward_model": str(small_reward_model)})
    judge = make_judge(config)  # scored locally: no client, no requests
    rows = uf_rows(arith_dataset)
    assert len(rows) == 48
    for r in rows:
        texts = [c["response"] for c in r["completions"]]
        prompt = Prompt(prompt_id=r["prompt_id"], prompt=r["prompt"], messages=r["messages"])
        data = asyncio.run(judge.judge(prompt, as_completions(texts)))
        assert data.requests == 0 and len(data.scores) == 2
        assert all(isinstance(s, float) for s in data.scores)


def test_train_cli_prints_metrics(tiny_model, arith_dataset, tmp_path, capsys):
    from flows.cli import main

    out = tmp_path / "cli-sft"
    code = main(["train", "sft", "--dataset", str(arith_dataset), "--model", str(tiny_model), "--output", str(out),
                 "--max-steps", "1", "--batch-size", "2"])  # fmt: skip
    assert code == 0
    printed = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert printed["output"] == str(out) and printed["method"] == "sft" and (out / "config.json").exists()
    assert main(["train", "ppo", "--dataset", str(arith_dataset), "--model", str(tiny_model)]) == 2
    assert "PPO needs a reward model" in capsys.readouterr().err
