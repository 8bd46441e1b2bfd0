"""Judge spend per pair: when another judge ranks, the pairwise judge compares only the pairs binarization
will emit (both orders), counted at the server; `compare: all` keeps every pair. The pairs and their soft
labels are the same either way."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

from tests.helpers import write_jsonl
from tests.unique_stub import CountingChatStub

PROMPTS = [
    f"Give one tip about {w}." for w in ("sleep", "tea", "maps", "bikes", "rain", "bread", "cats", "jazz")
]


def run(tmp: Path, stub: CountingChatStub, compare: str) -> tuple[int, list[dict]]:
    data = write_jsonl(tmp / "p.jsonl", [{"prompt": p} for p in PROMPTS])
    recipe = tmp / f"{compare}.yaml"
    recipe.write_text(f"""name: spend
prompts: {{path: {data}}}
policy: {{endpoints: [{{base_url: {stub.url("gen")}, model: stub-policy}}]}}
sampling: {{n: 4, max_tokens: 24, seed: 1}}
judges:
  - {{type: ultrafeedback, aspects: [helpfulness], judge: {{endpoints: [{{base_url: {stub.url("uf")}, model: uf}}]}}}}
  - {{type: pairwise, compare: {compare}, judge: {{endpoints: [{{base_url: {stub.url(compare)}, model: pw}}]}}}}
binarize: {{test_fraction: 0.0}}
""")
    out = tmp / f"out-{compare}"
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(recipe), "--out", str(out)],
                          capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    import datasets

    pairs = [
        r for r in datasets.load_from_disk(str(out / "binarized"))["train_prefs"] if r["origin"] == "judge"
    ]
    return stub.received_in(compare), pairs


def test_pairwise_compares_only_the_emitted_pairs_when_another_judge_ranks(tmp_path):
    with CountingChatStub(mode="hash") as stub:
        sent_auto, auto = run(tmp_path, stub, "auto")
        sent_all, every = run(tmp_path, stub, "all")
    assert sent_all == len(PROMPTS) * 4 * 3  # 6 pairs of 4 answers, both orders
    assert len(auto) >= len(PROMPTS) - 2 and sent_auto == 2 * len(auto)  # one pair per prompt, both orders
    key = lambda r: (r["prompt_id"], r["chosen"][0]["content"], r["rejected"][0]["content"])  # noqa: E731
    assert sorted(map(key, auto)) == sorted(map(key, every))  # the same pairs: UltraFeedback ranks both
    soft = {key(r): r["p_chosen"] for r in every}
    assert all(r["p_chosen"] is not None and abs(r["p_chosen"] - soft[key(r)]) < 1e-9 for r in auto)
    summary = json.loads((tmp_path / "out-auto" / "summary.json").read_text())
    assert summary["usage"]["judge:pairwise"]["requests"] == sent_auto
