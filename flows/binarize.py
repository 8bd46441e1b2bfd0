"""Binarisation: turn scored completions into TRL-ready chosen/rejected pairs.

Rules: `best-vs-random-lower` (as HuggingFaceH4/ultrafeedback_binarized), `best-vs-worst`,
`all-pairs`. Ties are dropped unless `keep_ties`; pairs under `min_margin` are dropped.
"""

from __future__ import annotations

import hashlib
import itertools
import random
from typing import Any

from pydantic import BaseModel

from flows.recipe import BinarizeSpec


class PairRow(BaseModel):
    prompt_id: str
    prompt: list[dict[str, str]]
    chosen: list[dict[str, str]]
    rejected: list[dict[str, str]]
    score_chosen: float
    score_rejected: float
    margin: float
    chosen_model: str
    rejected_model: str
    origin: str  # "judge" | "constitution"
    judge: str
    principle_id: str | None = None
    principle_sha256: str | None = None


class BinarizeStats(BaseModel):
    prompts: int = 0
    pairs: int = 0
    ties_dropped: int = 0
    below_margin: int = 0
    too_few_completions: int = 0
    unscored: int = 0
    verdict_disagrees: int = 0


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def candidate_pairs(
    scores: list[float | None], rule: str, rng: random.Random, keep_ties: bool
) -> tuple[list[tuple[int, int]], int]:
    """(chosen, rejected) index pairs by the rule, and how many were dropped as ties."""
    idx = [i for i, s in enumerate(scores) if s is not None]
    if len(idx) < 2:
        return [], 0
    s = {i: float(scores[i]) for i in idx}  # type: ignore[arg-type]
    ties = 0
    if rule == "all-pairs":
        out = []
        for i, j in itertools.combinations(idx, 2):
            if s[i] == s[j]:
                ties += 1
                if keep_ties:
                    out.append((i, j))
                continue
            out.append((i, j) if s[i] > s[j] else (j, i))
        return out, ties
    best = max(idx, key=lambda i: (s[i], -i))
    if rule == "best-vs-worst":
        # The lowest-scored of the others (lowest index on ties). Excluding `best` matters only when
        # every score ties: `min` over all of idx would then pick `best` itself and lose the pair.
        worst = min((i for i in idx if i != best), key=lambda i: (s[i], i))
        if s[worst] == s[best]:
            return ([(best, worst)] if keep_ties else []), 1
        return [(best, worst)], 0
    lower = [i for i in idx if s[i] < s[best]]
    if not lower:
        others = [i for i in idx if i != best]
        return ([(best, rng.choice(others))] if keep_ties else []), 1
    return [(best, rng.choice(lower))], 0


def binarize_prompt(
    row: dict[str, Any],
    score_key: str,
    spec: BinarizeSpec,
    verdicts: dict[tuple[int, int], str] | None = None,
    stats: BinarizeStats | None = None,
) -> list[PairRow]:
    """Pairs for one UltraFeedback row. `verdicts[(i, j)]` ("x"/"y"/"tie") gates pairwise pairs."""
    stats = stats or BinarizeStats()
    comps = row["completions"]
    stats.prompts += 1
    if len(comps) < 2:
        stats.too_few_completions += 1
        return []
    scores = [(c.get("scores") or {}).get(score_key) for c in comps]
    if sum(s is not None for s in scores) < 2:
        stats.unscored += 1
        return []
    seed = int(hashlib.sha256(f"{spec.seed}|{row['prompt_id']}".encode()).hexdigest()[:12], 16)
    pairs, ties = candidate_pairs(scores, spec.rule, random.Random(seed), spec.keep_ties)
    stats.ties_dropped += ties if not spec.keep_ties else 0
    out = []
    for c, r in pairs:
        if verdicts is not None:
            si, sj = comps[c]["sample_index"], comps[r]["sample_index"]
            v = verdicts.get((si, sj)) or {"x": "y", "y": "x", "tie": "tie"}.get(
                verdicts.get((sj, si), ""), None
            )
            if v != "x":  # the judge did not consistently prefer the chosen one
                stats.verdict_disagrees += 1
                continue
        margin = float(scores[c]) - float(scores[r])  # type: ignore[arg-type]
        if margin < spec.min_margin:
            stats.below_margin += 1
            continue
        out.append(PairRow(
            prompt_id=row["prompt_id"], prompt=row["messages"],
            chosen=_assistant(comps[c]["response"]), rejected=_assistant(comps[r]["response"]),
            score_chosen=float(scores[c]), score_rejected=float(scores[r]),  # type: ignore[arg-type]
            margin=margin, chosen_model=comps[c]["model"], rejected_model=comps[r]["model"],
            origin="judge", judge=score_key,
        ))  # fmt: skip
    stats.pairs += len(out)
    return out


def is_test(prompt_id: str, fraction: float) -> bool:
    """Deterministic split by prompt id."""
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction


def split_ids(prompt_ids: list[str], fraction: float) -> set[str]:
    """Test prompt ids; at least one when there are 2+ prompts and fraction > 0."""
    test = {p for p in prompt_ids if is_test(p, fraction)}
    uniq = sorted(set(prompt_ids))
    if not test and fraction > 0 and len(uniq) >= 2:
        test = {min(uniq, key=lambda p: hashlib.sha256(p.encode()).hexdigest())}
    if len(test) == len(uniq) and len(uniq) >= 2:
        test.discard(max(uniq, key=lambda p: hashlib.sha256(p.encode()).hexdigest()))
    return test
