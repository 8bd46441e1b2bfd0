"""The review page in a real browser (headless system Chromium driven by Playwright) over a real run on
the vLLM server: filter to judge disagreements, flip one pair and drop one, re-run the recipe.

The re-run sends 0 requests (vLLM's own request counter), the flipped pair is swapped, the dropped pair
is gone, and the card, the ledger and summary.json count both; `--export-gold` then `judge-eval` runs."""

from __future__ import annotations

import json
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from flows.cli import main
from tests.helpers import free_port, metric, wait_for, write_jsonl

CHROMIUM = shutil.which("chromium") or shutil.which("chromium-browser")
PROMPTS = [{"prompt": "Name a fruit that is yellow."}, {"prompt": "What is 3 times 4?"},
           {"prompt": "Give a one-line tip for sleeping well."}, {"prompt": "Say hello in French."},
           {"prompt": "Name a large animal."}, {"prompt": "What colour is the sky?"}]  # fmt: skip
BROWSER_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run", "--disable-sync",
                "--disable-background-networking", "--disable-component-update"]  # fmt: skip


def recipe(tmp_path: Path, port: int) -> Path:
    """Ranked by answer length (the `chars` test judge: local, deterministic), every pair kept; the `parity`
    test judge (odd word counts score 1) disputes some of them: those are flagged "judges disagree". The
    real UltraFeedback judge rates every answer too (the page shows its ratings)."""
    data = write_jsonl(tmp_path / "prompts.jsonl", PROMPTS)
    p = tmp_path / "r.yaml"
    p.write_text(f"""name: review
prompts: {{path: {data}}}
policy: {{port: {port}}}
sampling: {{n: 4, max_tokens: 24, seed: 3}}
judges:
  - {{type: chars}}
  - {{type: parity}}
  - {{type: ultrafeedback, aspects: [helpfulness], max_tokens: 96}}
binarize: {{rule: all-pairs, score: chars, test_fraction: 0.3}}
lints: {{allow_truncated_chosen: true}}
""")
    return p


def pairs_by_id(out: Path) -> dict[str, dict]:
    import datasets

    b = datasets.load_from_disk(str(out / "binarized"))
    return {r["pair_id"]: r for s in ("train_prefs", "test_prefs") for r in b[s]}


@pytest.mark.skipif(CHROMIUM is None, reason="no system Chromium (`make setup` installs it with apt)")
def test_review_page_flip_and_drop_then_rebuild(vllm_server, tmp_path):
    from playwright.sync_api import sync_playwright

    import tests.length_judge  # noqa: F401  registers the `chars` and `parity` judges in this process

    r, out = recipe(tmp_path, vllm_server.port), tmp_path / "run"
    assert main(["run", str(r), "--out", str(out)]) == 0
    before = pairs_by_id(out)
    disputed = [k for k, p in before.items() if "judges disagree" in p["flags"]]
    assert len(disputed) >= 2, f"the run should have pairs the two judges disagree on: {len(disputed)}"

    port = free_port()
    server = subprocess.Popen([sys.executable, "-m", "flows.cli", "review", str(out), "--port", str(port)],
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)  # fmt: skip
    try:
        import httpx

        def up() -> bool:
            try:
                return httpx.get(f"http://127.0.0.1:{port}/api/meta", timeout=1).status_code == 200
            except httpx.HTTPError:
                assert server.poll() is None, server.stdout.read() if server.stdout else ""
                return False

        wait_for(up, 60, "the review server")
        with sync_playwright() as pw:
            browser = pw.chromium.launch(executable_path=CHROMIUM, args=BROWSER_ARGS)
            page = browser.new_page(viewport={"width": 1300, "height": 850})
            errors: list[str] = []
            page.on("pageerror", lambda e: errors.append(str(e)))
            page.goto(f"http://127.0.0.1:{port}/")
            page.wait_for_selector(".item")
            page.select_option("#flag", "judges disagree")
            page.wait_for_function(
                f"document.getElementById('total').textContent.endsWith('of {len(disputed)}')"
            )
            ids = page.eval_on_selector_all(".item", "els => els.map(e => e.dataset.pairId)")
            assert set(ids) <= set(disputed) and len(ids) == min(len(disputed), 25)
            flipped, dropped = ids[0], ids[1]
            page.click(f".item[data-pair-id='{flipped}']")
            page.wait_for_selector("#btn-flip")
            page.fill("#note", "the shorter answer is right")
            page.click("#btn-flip")
            page.wait_for_selector(f".item[data-pair-id='{flipped}'] .chip.d")
            page.click(f".item[data-pair-id='{dropped}']")
            page.wait_for_function(f"document.querySelector('.item.sel').dataset.pairId === '{dropped}'")
            page.wait_for_selector("#status")
            page.keyboard.press("d")  # the keyboard decides too
            page.wait_for_selector(f".item[data-pair-id='{dropped}'] .chip.d")
            page.click("#tab-overview")
            page.wait_for_selector("#agreement")
            assert "judge vs reviewer" in page.inner_text("header")
            assert not errors, errors
            browser.close()
    finally:
        server.terminate()
        server.wait(timeout=30)

    lines = [json.loads(x) for x in (out / "review" / "decisions.jsonl").read_text().splitlines()]
    assert [(d["pair_id"], d["decision"]) for d in lines] == [(flipped, "flip"), (dropped, "drop")]
    assert lines[0]["note"] == "the shorter answer is right" and lines[0]["pair"]["chosen"]

    sent = metric(vllm_server, "vllm:request_success_total")
    assert main(["run", str(r), "--out", str(out)]) == 0
    assert metric(vllm_server, "vllm:request_success_total") == sent  # 0 model requests: a rebuild only

    after = pairs_by_id(out)
    assert dropped not in after and flipped in after
    old, new = before[flipped], after[flipped]
    assert (new["chosen"], new["rejected"]) == (old["rejected"], old["chosen"])
    assert new["origin"] == "human" and "reviewed: flip" in new["flags"]
    assert set(after) == set(before) - {dropped}
    summary = json.loads((out / "summary.json").read_text())
    review, ledger = summary["build"]["review"], summary["build"]["ledger"]
    assert (review["flipped"], review["dropped"], review["unmatched"]) == (1, 1, 0)
    assert ledger["pairs"]["judge"]["dropped"]["reviewer: drop"] == 1
    assert ledger["notes"]["pairs a reviewer decided (origin human)"] == 1
    card = (out / "README.md").read_text()
    assert "| flipped by a reviewer | 1 |" in card and "| dropped by a reviewer | 1 |" in card

    gold = tmp_path / "gold.jsonl"
    assert main(["review", str(out), "--export-gold", str(gold)]) == 0
    (pair,) = [json.loads(x) for x in gold.read_text().splitlines()]
    assert (pair["chosen"], pair["rejected"]) == (old["rejected"][0]["content"], old["chosen"][0]["content"])
    assert main(["judge-eval", "--pairs", str(gold), "--recipe", str(r), "--judge", "chars", "--json",
                 str(tmp_path / "eval.json")]) == 0  # fmt: skip
    assert json.loads((tmp_path / "eval.json").read_text())["n"] == 1
