"""Build stage: UltraFeedback rows + TRL-ready pairs + best-of-N SFT rows, saved atomically.

Writes `OUT/ultrafeedback/`, `OUT/binarized/` (`datasets` folders), `OUT/parquet/`, the dataset
card `OUT/README.md` and plots under `OUT/report/`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
import tempfile
from collections import defaultdict
from importlib.metadata import version
from pathlib import Path
from typing import Any

from pydantic import BaseModel, Field

from flows.binarize import BinarizeStats, PairRow, binarize_prompt, split_ids
from flows.recipe import BinarizeSpec
from flows.shards import read_json


class BuildResult(BaseModel):
    out_dir: str
    prompts: int = 0
    completions: int = 0
    pairs: dict[str, int] = Field(default_factory=dict)  # split -> rows
    stats: BinarizeStats = Field(default_factory=BinarizeStats)
    constitution_pairs: int = 0
    judges: dict[str, dict[str, Any]] = Field(default_factory=dict)  # key -> figures
    mean_len_chosen: float | None = None
    mean_len_rejected: float | None = None


def load_judges(judge_shards: dict[str, list[str]]) -> dict[str, dict[str, Any]]:
    """Read every judge shard once: key -> {"type", "model", "prompts": {prompt_id: data},
    "requests", "parse_failures"}."""
    out: dict[str, dict[str, Any]] = {}
    for key, shards in judge_shards.items():
        j: dict[str, Any] = {
            "type": "ultrafeedback",
            "model": "",
            "prompts": {},
            "requests": 0,
            "parse_failures": 0,
        }
        for s in shards:
            d = read_json(Path(s))
            j["type"], j["model"] = d["type"], d.get("endpoint_model", "")
            j["prompts"].update(d["prompts"])
            j["requests"] += d.get("requests", 0)
            j["parse_failures"] += d.get("parse_failures", 0)
        out[key] = j
    return out


def _win_rates(pairs: list[dict[str, Any]]) -> dict[int, float]:
    wins: dict[int, float] = defaultdict(float)
    games: dict[int, int] = defaultdict(int)
    for p in pairs:
        i, j = p["i"], p["j"]
        games[i] += 1
        games[j] += 1
        wins[i] += {"x": 1.0, "y": 0.0, "tie": 0.5}[p["winner"]]
        wins[j] += {"x": 0.0, "y": 1.0, "tie": 0.5}[p["winner"]]
    return {k: wins[k] / games[k] for k in games}


def assemble_rows(
    gen_shards: list[str],
    judges: dict[str, dict[str, Any]],
    critiques: dict[tuple[str, int], dict[str, Any]] | None = None,
    provenance: dict[str, Any] | None = None,
) -> list[dict[str, Any]]:
    """One UltraFeedback row per prompt, completions in sample order, every judge's scores."""
    primary = next((k for k, j in judges.items() if j["type"] == "ultrafeedback"), None)
    by_prompt: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for s in gen_shards:
        for r in read_json(Path(s))["rows"]:
            by_prompt[r["prompt_id"]].append(r)
    rows = []
    for pid, comps in by_prompt.items():
        comps.sort(key=lambda r: r["sample_index"])
        first = comps[0]
        out_comps = []
        verdicts = []
        for key, j in judges.items():
            if j["type"] == "pairwise" and pid in j["prompts"]:
                verdicts += [{"judge": key, "i": p["i"], "j": p["j"], "winner": p["winner"],
                              "consistent": p["consistent"], "p_x": p["p_x"]}
                             for p in j["prompts"][pid]["pairs"]]  # fmt: skip
        for c in comps:
            scores: dict[str, float | None] = {}
            annotations: dict[str, Any] = {}
            fine = None
            for key, j in judges.items():
                data = j["prompts"].get(pid)
                if data is None:
                    scores[key] = None
                    continue
                pos = data["sample_indices"].index(c["sample_index"])
                if j["type"] == "ultrafeedback":
                    cj = data["completions"][pos]
                    scores[key] = cj["fine_grained_score"]
                    if key == primary:
                        annotations, fine = cj["annotations"], cj["fine_grained_score"]
                elif j["type"] == "reward_model":
                    scores[key] = data["scores"][pos]
                else:
                    scores[key] = _win_rates(data["pairs"]).get(c["sample_index"])
            crit = (critiques or {}).get((pid, c["sample_index"]), {})
            out_comps.append({
                "sample_index": c["sample_index"], "model": c["model"], "response": c["response"],
                "sampling": c["sampling"], "finish_reason": c["finish_reason"],
                "completion_tokens": c["completion_tokens"], "annotations": annotations or None,
                "fine_grained_score": fine, "scores": scores or None,
                "critique": crit.get("critique"), "revision": crit.get("revision"),
                "principle_id": crit.get("principle_id"),
            })  # fmt: skip
        rows.append({
            "prompt_id": pid, "prompt": first["prompt"], "messages": first["messages"],
            "source": first.get("source", ""), "completions": out_comps,
            "pairwise_verdicts": verdicts, "provenance": provenance or {},
        })  # fmt: skip
    rows.sort(key=lambda r: r["prompt_id"])
    return rows


def make_pairs(
    rows: list[dict[str, Any]],
    judges: dict[str, dict[str, Any]],
    spec: BinarizeSpec,
) -> tuple[list[PairRow], BinarizeStats, str | None]:
    score_key = spec.score or next(
        (k for k, j in judges.items() if j["type"] == "ultrafeedback"), next(iter(judges), None)
    )
    stats = BinarizeStats()
    if score_key is None:
        stats.prompts = len(rows)
        return [], stats, None
    is_pairwise = judges.get(score_key, {}).get("type") == "pairwise"
    pairs: list[PairRow] = []
    for row in rows:
        verdicts = None
        if is_pairwise:
            verdicts = {(v["i"], v["j"]): v["winner"] for v in row["pairwise_verdicts"]
                        if v["judge"] == score_key}  # fmt: skip
        pairs += binarize_prompt(row, score_key, spec, verdicts, stats)
    return pairs, stats, score_key


def sft_rows(rows: list[dict[str, Any]], score_key: str | None) -> list[dict[str, Any]]:
    """Best-of-N: the highest-scoring completion per prompt (rejection sampling), in the pair schema."""
    out = []
    for row in rows:
        scored = [
            c for c in row["completions"] if score_key and (c["scores"] or {}).get(score_key) is not None
        ]
        if not scored:
            continue
        best = max(scored, key=lambda c: (c["scores"][score_key], -c["sample_index"]))
        out.append({"prompt_id": row["prompt_id"], "prompt": row["messages"],
                    "chosen": [{"role": "assistant", "content": best["response"]}], "rejected": [],
                    "score_chosen": float(best["scores"][score_key]), "chosen_model": best["model"],
                    "origin": "best-of-n", "judge": score_key})  # fmt: skip
    return out


def binarized_features() -> Any:
    """One schema for all four splits (as in HuggingFaceH4/ultrafeedback_binarized)."""
    from datasets import Features, List, Value

    msgs = List({"role": Value("string"), "content": Value("string")})
    return Features({
        "prompt_id": Value("string"), "prompt": msgs, "chosen": msgs, "rejected": msgs, "messages": msgs,
        "score_chosen": Value("float64"), "score_rejected": Value("float64"), "margin": Value("float64"),
        "chosen_model": Value("string"), "rejected_model": Value("string"), "origin": Value("string"),
        "judge": Value("string"), "principle_id": Value("string"), "principle_sha256": Value("string"),
    })  # fmt: skip


def _dataset(rows: list[dict[str, Any]]) -> Any:
    """A Dataset in the binarized schema; `messages` = prompt + chosen (for SFT)."""
    import datasets

    features = binarized_features()
    full = [{**{k: None for k in features}, **r, "messages": r["prompt"] + r["chosen"]} for r in rows]
    return datasets.Dataset.from_dict({k: [r[k] for r in full] for k in features}, features=features)


def provenance(recipe: Any, judges: dict[str, dict[str, Any]], constitution: dict | None) -> dict:
    return {
        "policy": recipe.policy.display_name(),
        "judges": [f"{k}:{j['type']}:{j['model']}" for k, j in judges.items()] if judges else [],
        "constitution_sha256": (constitution or {}).get("sha256"),
        "recipe_sha256": recipe.sha256(),
        "created_at": dt.datetime.now(dt.UTC).isoformat(timespec="seconds"),
        "rlaif_version": version("rlaif"),
    }


def write_outputs(
    out_dir: Path,
    uf_rows: list[dict[str, Any]],
    pairs: list[PairRow],
    sft: list[dict[str, Any]],
    test_fraction: float,
) -> dict[str, int]:
    """Save both datasets + Parquet into a staging folder, then move them into place."""
    import datasets

    datasets.disable_progress_bars()
    out_dir.mkdir(parents=True, exist_ok=True)
    staging = Path(tempfile.mkdtemp(prefix=".build-", dir=out_dir))
    try:
        test_ids = split_ids([r["prompt_id"] for r in uf_rows], test_fraction)
        prs = [p.model_dump() for p in pairs]
        splits = {
            "train_prefs": _dataset([p for p in prs if p["prompt_id"] not in test_ids]),
            "test_prefs": _dataset([p for p in prs if p["prompt_id"] in test_ids]),
            "train_sft": _dataset([s for s in sft if s["prompt_id"] not in test_ids]),
            "test_sft": _dataset([s for s in sft if s["prompt_id"] in test_ids]),
        }
        binarized = datasets.DatasetDict(splits)
        uf = datasets.DatasetDict({"train": datasets.Dataset.from_list(uf_rows)}) if uf_rows else None
        # an empty split needs num_shards=1 or `datasets` writes no data file and cannot load it back
        binarized.save_to_disk(str(staging / "binarized"),
                               num_shards={k: 1 for k, v in splits.items() if len(v) == 0} or None)  # fmt: skip
        (staging / "parquet" / "binarized").mkdir(parents=True)
        for name, ds in splits.items():
            ds.to_parquet(str(staging / "parquet" / "binarized" / f"{name}.parquet"))
        (staging / "parquet" / "ultrafeedback").mkdir(parents=True)
        if uf is not None:
            uf["train"].save_to_disk(str(staging / "ultrafeedback"))
            uf["train"].to_parquet(str(staging / "parquet" / "ultrafeedback" / "train.parquet"))
        else:
            empty = datasets.Dataset.from_dict({"prompt_id": []}, features=datasets.Features(
                {"prompt_id": datasets.Value("string")}))  # fmt: skip
            empty.save_to_disk(str(staging / "ultrafeedback"), num_shards=1)
            empty.to_parquet(str(staging / "parquet" / "ultrafeedback" / "train.parquet"))
        for name in ("binarized", "ultrafeedback", "parquet"):
            target = out_dir / name
            if target.exists():
                shutil.rmtree(target)
            os.replace(staging / name, target)
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    return {k: len(v) for k, v in splits.items()}


def build(
    out_dir: Path,
    gen_shards: list[str],
    judge_shards: dict[str, list[str]],
    spec: BinarizeSpec,
    recipe: Any,
    critiques: dict[tuple[str, int], dict[str, Any]] | None = None,
    constitution_pairs: list[PairRow] | None = None,
    constitution: dict | None = None,
) -> BuildResult:
    """Assemble, binarise and save; returns the figures the card and summary need."""
    judges = load_judges(judge_shards)
    rows = assemble_rows(gen_shards, judges, critiques, provenance(recipe, judges, constitution))
    pairs, stats, score_key = make_pairs(rows, judges, spec)
    cpairs = constitution_pairs or []
    all_pairs = pairs + cpairs
    counts = write_outputs(out_dir, rows, all_pairs, sft_rows(rows, score_key), spec.test_fraction)
    res = BuildResult(out_dir=str(out_dir), prompts=len(rows), pairs=counts, stats=stats,
                      completions=sum(len(r["completions"]) for r in rows),
                      constitution_pairs=len(cpairs))  # fmt: skip
    if all_pairs:
        res.mean_len_chosen = sum(len(p.chosen[0]["content"]) for p in all_pairs) / len(all_pairs)
        res.mean_len_rejected = sum(len(p.rejected[0]["content"]) for p in all_pairs) / len(all_pairs)
    res.judges = judge_figures(rows, judges)
    return res


def judge_figures(rows: list[dict[str, Any]], judges: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    figs: dict[str, dict[str, Any]] = {}
    for key, j in judges.items():
        f: dict[str, Any] = {k: j[k] for k in ("type", "model", "requests", "parse_failures")}
        if j["type"] == "pairwise":
            vs = [v for r in rows for v in r["pairwise_verdicts"] if v["judge"] == key]
            f["comparisons"] = len(vs)
            f["position_consistency"] = sum(v["consistent"] for v in vs) / len(vs) if vs else None
            f["tie_rate"] = sum(v["winner"] == "tie" for v in vs) / len(vs) if vs else None
        elif j["type"] == "ultrafeedback":
            ratings = [a["rating"] for r in rows for c in r["completions"]
                       for a in (c["annotations"] or {}).values()]  # fmt: skip
            f["ratings"] = len(ratings)
            f["null_ratings"] = sum(x is None for x in ratings)
        figs[key] = f
    return figs
