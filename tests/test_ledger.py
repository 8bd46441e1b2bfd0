"""The ledger closes on a run with every kind of drop (input, generation, lints, ties, truncation,
identical pairs, revision statuses, truncated label winners), shows on the card, and a build whose
counts do not add up fails with one line; turns left unused are counted and warned about once."""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

import tests.length_judge  # noqa: F401 - registers the `chars` judge
from flows.cli import main
from flows.dataset.ledger import Account, Ledger, LedgerError
from flows.dataset.prompts import prompt_id_for
from flows.engine.stages import sample_seed
from tests.helpers import write_jsonl
from tests.stubs import StubServer, chat_body

PRINCIPLE = {"id": "better", "critique": "What could be better?", "revision": "Rewrite it better.",
             "comparison": "Which answer is better?"}  # fmt: skip
PROMPTS = ["", "x" * 300, "Tell me about cats.", "Tell me about cats.", "Tell me about cats!",
           "REJECT this one please", "What is the boiling point of water in kelvin at sea level?",
           "TIES: say something", "IDENT: say it", "TRUNC: go on", "Name a color.", "Name an animal."]  # fmt: skip
CHOICE = re.compile(r"\(A\)\n<<<\n(.*?)\n>>>\n\n\(B\)\n<<<\n(.*?)\n>>>", re.S)


def answer(prompt: str, i: int) -> tuple[str, str]:
    """The policy's answer to sample i of a prompt, and its finish reason."""
    if prompt.startswith("TIES"):
        return f"tie answer {'abc'[i]}", "stop"  # equal lengths: the chars judge ties them
    if prompt.startswith("IDENT"):
        return ["the same answer", "the  same answer", "the   same   answer"][i], "stop"  # identical pairs
    if prompt.startswith("TRUNC"):
        return f"trunc{i} " + "y" * 3 * (i + 1), "length"  # every answer cut at max_tokens
    return f"answer{i} " + "z" * 3 * (i + 1), "stop"


def reply(req: dict[str, Any], n: int) -> tuple[int, Any, dict[str, str]]:
    msgs = req["messages"]
    last = msgs[-1]["content"]
    if "seed" in req:  # the policy
        if "REJECT" in last:
            return 400, {"error": {"message": "This model's maximum context length is 2048 tokens"}}, {}
        i = next(k for k in range(3) if sample_seed(1, prompt_id_for(last), k) == req["seed"])
        text, finish = answer(last, i)
        body = chat_body(text)
        body["choices"][0]["finish_reason"] = finish
        return 200, body, {}
    if "structured_outputs" in req:  # a label: the smaller text wins, in both orders (consistent)
        a, b = CHOICE.search(last).groups()
        return 200, chat_body("A" if a < b else "B"), {}
    if last == PRINCIPLE["critique"]:
        return 200, chat_body("It could be better."), {}
    original = msgs[-4]["content"]
    if original.startswith("trunc"):
        body = chat_body("a revision cut short")
        body["choices"][0]["finish_reason"] = "length"
        return 200, body, {}
    revision = {"answer1": original, "answer2": "I'm sorry, I cannot help with that."}.get(
        original.split(" ")[0], f"REVISED {original} better"
    )
    return 200, chat_body(revision), {}


def recipe(tmp_path: Path, url: str) -> Path:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"prompt": p} for p in PROMPTS])
    evals = write_jsonl(tmp_path / "eval.jsonl", [{"prompt": PROMPTS[6]}])
    const = tmp_path / "c.yaml"
    const.write_text(json.dumps({"name": "c", "version": 1, "principles": [PRINCIPLE]}))
    r = tmp_path / "drops.yaml"
    r.write_text(f"""name: drops
prompts: {{path: {prompts}, max_prompt_chars: 200}}
policy: {{endpoints: [{{base_url: {url}, model: stub}}]}}
sampling: {{n: 3, max_tokens: 16, seed: 1}}
judges: [{{type: chars}}]
critique: {{constitution: {const}, mode: both, principles: all, max_tokens: 32,
           judge: {{endpoints: [{{base_url: {url}, model: stub}}]}}}}
binarize: {{test_fraction: 0.0}}
lints: {{drop_duplicate_prompts: true}}
decontaminate: [{evals}]
""")
    return r


def test_ledger_closes_on_a_run_with_every_kind_of_drop(tmp_path, capsys):
    out = tmp_path / "out"
    with StubServer(reply) as stub:
        assert main(["run", str(recipe(tmp_path, stub.base_url)), "--out", str(out)]) == 0
    led = Ledger.model_validate(json.loads((out / "summary.json").read_text())["build"]["ledger"])
    assert (led.prompts.given, led.prompts.kept) == (12, 6)
    assert led.prompts.dropped == {"input:empty": 1, "input:too_long": 1, "input:duplicate": 1,
                                   "generate:too_long": 1, "lint:decontaminated": 1, "lint:duplicate": 1}  # fmt: skip
    assert (led.samples.given, led.samples.kept) == (27, 18)
    assert led.samples.dropped == {"prompt rejected at generation: too_long": 3, "prompt dropped by lints": 6}
    judge = led.pairs["judge"]
    assert (judge.given, judge.kept) == (6, 3)
    assert judge.dropped == {"tie": 1, "truncated": 1, "lint:identical": 1}
    const = led.pairs["constitution"]
    # 8 prompts were generated for (2 were dropped by lints after): 3 critiques + 1 label each
    assert (const.given, const.kept) == (8 * (3 + 1), 13)
    assert const.dropped == {"revision_identical": 5, "revision_refusal": 5, "revision_truncated": 3,
                             "label_truncated_chosen": 1, "prompt dropped by lints": 4, "lint:identical": 1}  # fmt: skip
    assert (led.sft.given, led.sft.kept, led.sft.dropped) == (6, 5, {"truncated": 1})
    assert all(acc.closes() for _, acc in led.accounts())
    # what the datasets hold is what the ledger says was kept
    pairs = pq.read_table(out / "parquet" / "binarized" / "train_prefs.parquet").to_pylist()
    assert (
        sum(p["origin"] == "judge" for p in pairs) == 3
        and sum(p["origin"] == "constitution" for p in pairs) == 13
    )
    assert not any(p["chosen"][0]["content"].startswith(("trunc", "a revision cut")) for p in pairs)
    card = (out / "README.md").read_text()
    assert "## Ledger" in card and "| prompts | 12 | 6 |" in card and "revision_truncated: 3" in card
    assert "ledger" in capsys.readouterr().out


def test_a_ledger_that_does_not_close_fails_the_build_in_one_line():
    led = Ledger(prompts=Account(given=10, kept=8, dropped={"input:empty": 1}))
    with pytest.raises(LedgerError) as e:
        led.check()
    msg = str(e.value)
    assert msg.count("\n") == 0 and "prompts" in msg and "10 = 8 kept + 1 input:empty" in msg and "+1" in msg


def test_turns_beyond_the_first_are_counted_and_warned_once(tmp_path, capsys):
    from flows.pipeline import prepare_prompts
    from flows.recipe import Recipe

    data = write_jsonl(tmp_path / "mt.jsonl", [{"turns": ["Write a poem.", "Now shorter."]},
                                               {"turns": ["One turn only."]},
                                               {"turns": ["Plan a trip.", "To Rome.", "In May."]}])  # fmt: skip
    r = Recipe.model_validate({"prompts": {"path": str(data), "column": "turns"}})
    man = prepare_prompts(r, tmp_path / "out")
    assert man.prompts == 3 and man.read == 3
    assert man.notes == {"turns_unused": 3, "prompts_with_unused_turns": 2}
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "only the first turn is used (3 turns left out" in err[0]
