"""Golden datasets: one recipe through `rlaif run` (a subprocess, as a user runs it) against the
deterministic stub (tests/unique_stub.py, `mode="hash"`: every answer is a function of its request
body) as policy and every judge, with every kind of feedback: UltraFeedback ratings, pairwise verdicts
with logprobs (soft p_x), and a constitution's critiques/revisions and A/B labels (`mode: both`,
`principles: all`), binarized `all-pairs` without ties, with a train/test split.

Everything the run wrote that is data (the `datasets` folders: ultrafeedback and binarized with its
four splits, rows and features; the ledger, drop counts and judge figures of summary.json; the number
of requests the stub answered) is turned into one canonical JSON (rows sorted, run stamps removed: see
`VOLATILE`) and compared with tests/golden/same_datasets.json.
A refactor that keeps the data keeps that file. `RLAIF_UPDATE_GOLDEN=1` rewrites it instead of comparing
(do that only for a change that is meant to change the data, and say why in the commit).

No vLLM: the stub answers ~400 requests in well under a second; the run's time is Prefect's and the
build's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.helpers import write_jsonl
from tests.unique_stub import CountingChatStub

ROOT = Path(__file__).resolve().parents[1]
GOLDEN = ROOT / "tests" / "golden" / "same_datasets.json"
CONSTITUTION = ROOT / "constitutions" / "harmless.yaml"
UPDATE = os.environ.get("RLAIF_UPDATE_GOLDEN", "").lower() in ("1", "true", "yes")

# Six prompts: five single-turn chats and one multi-turn chat with a system prompt.
CHATS = [
    [{"role": "user", "content": "Give me three tips for keeping basil alive on a windowsill."}],
    [{"role": "user", "content": "Explain in two sentences why the sky looks blue."}],
    [{"role": "user", "content": "Write a haiku about a lighthouse in the fog."}],
    [{"role": "user", "content": "How can I politely decline a meeting invitation?"}],
    [{"role": "user", "content": "What is the difference between a list and a tuple in Python?"}],
    [
        {"role": "system", "content": "You are a patient cooking teacher who answers briefly."},
        {"role": "user", "content": "I have eggs, spinach and some feta."},
        {"role": "assistant", "content": "Those make a good omelette or a small frittata."},
        {"role": "user", "content": "Which of the two is quicker on a weeknight, and how do I start?"},
    ],
]


def recipe_text(url: str, prompts: Path) -> str:
    """Policy and every judge on the stub, each under its own model name (part of every request body,
    so of every answer); the URL (a free port) is not in any request body."""

    def ep(model: str) -> str:
        return f"{{endpoints: [{{base_url: {url}, model: {model}}}]}}"

    return f"""name: same-datasets
prompts: {{path: {prompts}, column: messages}}
policy: {ep("stub-policy")}
sampling: {{n: 4, seed: 11, temperature: 0.9, max_tokens: 24}}
shard_size: 4
judges:
  - {{type: ultrafeedback, aspects: [helpfulness, honesty], max_tokens: 96, judge: {ep("stub-uf-judge")}}}
  - {{type: pairwise, logprobs: true, structured: true, compare: all, judge: {ep("stub-pairwise-judge")}}}
critique:
  constitution: {CONSTITUTION}
  mode: both
  principles: all
  max_tokens: 48
  judge: {ep("stub-critic")}
binarize: {{rule: all-pairs, keep_ties: false, test_fraction: 0.34, seed: 42, score: ultrafeedback}}
"""


# --------------------------------------------------------------------------- canonical form

# Keys removed wherever they occur: stamps of the run, the machine or the code version, not data.
VOLATILE = {
    "created_at",  # provenance: the build's time
    "rlaif_version",  # provenance: the code's version
    "recipe_sha256",  # provenance: the recipe holds the stub's port (a free one per run)
    "constitution_sha256",  # provenance: a hash of the constitution file, not of anything made
    "fingerprint",  # build.json: a hash over shard paths (the run folder) and the provenance
    "out_dir",  # the run folder
    "cached",  # whether the build was redone
    "wall_s",  # timings
}
SUMMARY_BUILD = ("prompts", "completions", "pairs", "constitution_pairs", "stats", "lints", "ledger",
                 "mean_len_chosen", "mean_len_rejected")  # fmt: skip
JUDGE_TEXT = (
    "quality",
    "headline",
    "section",
    "constitution",
)  # card sentences made of kept figures; a file path
USAGE = ("requests", "replayed", "prompt_tokens", "completion_tokens")  # the stub's own figures


def scrub(value: Any) -> Any:
    """`value` without VOLATILE keys; floats rounded to 12 significant digits (a refactor may sum the
    same numbers in another order: the last bits are not data)."""
    if isinstance(value, dict):
        return {k: scrub(v) for k, v in value.items() if k not in VOLATILE}
    if isinstance(value, list):
        return [scrub(v) for v in value]
    if isinstance(value, float):
        return float(f"{value:.12g}")
    return value


def sort_key(row: dict[str, Any]) -> str:
    return json.dumps(row, sort_keys=True, ensure_ascii=False)


def uf_canonical(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    rows = scrub(rows)
    for row in rows:
        row["completions"].sort(key=lambda c: c["sample_index"])
        row["pairwise_verdicts"].sort(key=lambda v: (v["judge"], v["i"], v["j"]))
    return sorted(rows, key=lambda r: r["prompt_id"])


def canonical(out: Path) -> dict[str, Any]:
    """What the run wrote that is data, in a form that only changes when the data do: the `datasets`
    folders (rows and features), the ledger and the counts of summary.json. The Parquet copies must
    hold the same rows as the `datasets` folders."""
    import datasets
    import pyarrow.parquet as pq

    uf_ds = datasets.load_from_disk(str(out / "ultrafeedback"))
    binarized = datasets.load_from_disk(str(out / "binarized"))
    uf = uf_canonical(uf_ds.to_list())
    splits = {name: sorted(scrub(binarized[name].to_list()), key=sort_key) for name in sorted(binarized)}
    parquet = out / "parquet"
    assert uf_canonical(pq.read_table(parquet / "ultrafeedback" / "train.parquet").to_pylist()) == uf
    for name, rows in splits.items():
        table = pq.read_table(parquet / "binarized" / f"{name}.parquet")
        assert sorted(scrub(table.to_pylist()), key=sort_key) == rows, f"parquet/binarized/{name} differs"
    summary = json.loads((out / "summary.json").read_text())
    counts = {
        "rows": {"ultrafeedback": len(uf), **{name: len(rows) for name, rows in splits.items()}},
        "split_prompt_ids": {name: sorted({r["prompt_id"] for r in rows}) for name, rows in splits.items()},
        "build": scrub({k: summary["build"][k] for k in SUMMARY_BUILD}),
        "judges": scrub({key: {k: v for k, v in figures.items() if k not in JUDGE_TEXT}
                         for key, figures in summary["build"]["judges"].items()}),
        "stages": {name: {"rows": st["rows"], "skipped": st["skipped"]}
                   for name, st in sorted(summary["stages"].items())},
        "usage": {key: {k: u[k] for k in USAGE} for key, u in sorted(summary["usage"].items())},
    }  # fmt: skip
    features = {"ultrafeedback": uf_ds.features.to_dict(),
                **{name: binarized[name].features.to_dict() for name in sorted(binarized)}}  # fmt: skip
    return {"counts": counts, "features": features, "ultrafeedback": uf, "binarized": splits}


def first_differences(want: Any, got: Any, limit: int = 12) -> list[str]:
    """JSON paths where `got` differs from `want`, with both values (shortened), at most `limit`; the
    counts first. Lists of rows of different lengths are compared as sets of rows (rows only in one)."""
    out: list[str] = []

    def short(v: Any) -> str:
        s = json.dumps(v, ensure_ascii=False, sort_keys=True)
        return s if len(s) <= 200 else s[:197] + "..."

    def walk(a: Any, b: Any, p: str) -> None:
        if len(out) >= limit:
            return
        if isinstance(a, dict) and isinstance(b, dict):
            for k in [*a, *(k for k in b if k not in a)]:
                if k not in b:
                    out.append(f"{p}.{k}: missing (golden: {short(a[k])})")
                elif k not in a:
                    out.append(f"{p}.{k}: new (got: {short(b[k])})")
                else:
                    walk(a[k], b[k], f"{p}.{k}")
        elif isinstance(a, list) and isinstance(b, list):
            if len(a) != len(b) and all(isinstance(x, dict) for x in a + b):
                only_a = [x for x in a if x not in b]
                only_b = [x for x in b if x not in a]
                out.append(f"{p}: {len(b)} rows, golden {len(a)}: {len(only_b)} new, {len(only_a)} missing")
                out.extend(f"{p}: new row {short(x)}" for x in only_b[:2])
                out.extend(f"{p}: missing row {short(x)}" for x in only_a[:2])
                return
            if len(a) != len(b):
                out.append(f"{p}: got {short(b)}, golden {short(a)}")
                return
            for i, (x, y) in enumerate(zip(a, b)):
                walk(x, y, f"{p}[{i}]")
        elif a != b:
            out.append(f"{p}: got {short(b)}, golden {short(a)}")

    sections = ["counts", "features", "ultrafeedback", "binarized"]
    walk(
        {k: want[k] for k in sections if k in want} | want,
        {k: got[k] for k in sections if k in got} | got,
        "$",
    )
    return out[:limit]


# --------------------------------------------------------------------------- the test


def run_recipe(tmp_path: Path, url: str) -> Path:
    prompts = write_jsonl(tmp_path / "prompts.jsonl", [{"messages": m} for m in CHATS])
    recipe = tmp_path / "same-datasets.yaml"
    recipe.write_text(recipe_text(url, prompts))
    out = tmp_path / "out"
    env = {**os.environ, "RLAIF_PROGRESS": "0",
           "PYTHONPATH": os.pathsep.join([str(ROOT), *filter(None, [os.environ.get("PYTHONPATH")])])}  # fmt: skip
    proc = subprocess.run([sys.executable, "-m", "flows.cli", "run", str(recipe), "--out", str(out)],
                          cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600)  # fmt: skip
    assert proc.returncode == 0, (
        f"rlaif run exited {proc.returncode}:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    )
    return out


def test_same_datasets(tmp_path):
    with CountingChatStub(mode="hash") as stub:
        out = run_recipe(tmp_path, stub.base_url)
        received, answered = stub.received, stub.answered
    assert received == answered > 0
    got = canonical(out)
    got["counts"]["stub_requests"] = received  # what the server answered: nothing more, nothing less
    text = json.dumps(got, indent=1, sort_keys=True, ensure_ascii=False) + "\n"
    if UPDATE:
        GOLDEN.parent.mkdir(parents=True, exist_ok=True)
        GOLDEN.write_text(text)
        pytest.skip(f"RLAIF_UPDATE_GOLDEN=1: wrote {GOLDEN.relative_to(ROOT)} ({got['counts']['rows']})")
    assert GOLDEN.exists(), f"no golden file {GOLDEN}: run once with RLAIF_UPDATE_GOLDEN=1"
    want, got = json.loads(GOLDEN.read_text()), json.loads(text)
    if got != want:
        (tmp_path / "same_datasets.json").write_text(text)
        diffs = first_differences(want, got)
        pytest.fail(
            "the run's datasets differ from tests/golden/same_datasets.json (first differences; the whole "
            f"output: {tmp_path / 'same_datasets.json'}):\n  " + "\n  ".join(diffs),
            pytrace=False,
        )
