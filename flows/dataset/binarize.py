"""Binarisation: turn scored completions into TRL-ready chosen/rejected pairs.

Rules: `best-vs-random-lower` (as HuggingFaceH4/ultrafeedback_binarized), `best-vs-worst`,
`all-pairs`. Ties are dropped unless `keep_ties`; pairs under `min_margin` are dropped. A truncated
completion (finish_reason "length") is never chosen unless the recipe allows it: the best complete one is.
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
    p_chosen: float | None = None  # a judge's P(chosen better), both orders averaged (logprobs)
    chosen_model: str
    rejected_model: str
    origin: str  # "judge" | "constitution"
    judge: str
    principle_id: str | None = None
    principle_sha256: str | None = None
    pair_id: str = ""  # stable across re-builds: `pair_id()`; `build` sets it
    flags: list[str] = []  # what a reviewer should look at first: FLAGS


def pair_id(prompt_id: str, origin: str, principle_id: str | None, chosen: str, rejected: str) -> str:
    """The id a review decision names: the prompt, the origin, the principle and both answers as the
    judges ordered them (a re-build that makes the same pair gives the same id; a decision never changes it)."""
    key = "\x00".join((prompt_id, origin, principle_id or "", chosen, rejected))
    return hashlib.sha256(key.encode()).hexdigest()[:16]


def disagree(row: dict[str, Any], c: int, r: int, score_key: str) -> bool:
    """Another judge ranks completion `r` over `c` (a lower score, or a pairwise verdict for `r`), or a
    pairwise judge's two orders of the pair disagree."""
    comps = row["completions"]
    mine, theirs = comps[c].get("scores") or {}, comps[r].get("scores") or {}
    if any(k != score_key and s is not None and theirs.get(k) is not None and s < theirs[k]
           for k, s in mine.items()):  # fmt: skip
        return True
    si, sj = comps[c]["sample_index"], comps[r]["sample_index"]
    for v in row.get("pairwise_verdicts") or []:
        ij = (v["i"], v["j"])
        if ij == (si, sj) and v["winner"] == "y" or ij == (sj, si) and v["winner"] == "x":
            return True
        if ij in ((si, sj), (sj, si)) and v.get("consistent") is False:
            return True
    return False


class BinarizeStats(BaseModel):
    prompts: int = 0
    pairs: int = 0
    ties_dropped: int = 0
    below_margin: int = 0
    too_few_completions: int = 0
    unscored: int = 0
    verdict_disagrees: int = 0
    truncated_chosen_repicked: int = 0  # a truncated best was passed over for a complete one
    truncated_chosen_dropped: int = 0  # no complete completion could be chosen: no pair
    truncated_sft_repicked: int = 0  # best-of-N row: the best complete completion instead
    truncated_sft_dropped: int = 0  # best-of-N row: none was complete
    candidates: int = 0  # judge pairs the rule proposed: each ends as a pair or one named drop


def _assistant(text: str) -> list[dict[str, str]]:
    return [{"role": "assistant", "content": text}]


def text_groups(texts: list[str]) -> list[int]:
    """One id per distinct answer (whitespace normalised, as the identical-pair lint compares them)."""
    seen: dict[tuple[str, ...], int] = {}
    return [seen.setdefault(tuple(t.split()), len(seen)) for t in texts]


def candidate_pairs(
    scores: list[float | None], rule: str, rng: random.Random, keep_ties: bool,
    choosable: list[bool] | None = None, same: list[int] | None = None,
) -> tuple[list[tuple[int, int]], dict[str, int]]:  # fmt: skip
    """(chosen, rejected) index pairs by the rule, and the rule's other candidates by why they were
    dropped ("tie", "truncated"): every candidate (one per prompt for the best-vs-* rules, one per two
    scored completions for all-pairs) is in exactly one of the two. Only a `choosable` completion
    (default: all) is chosen; any scored one may be rejected, so a kept tie puts a choosable one first.
    `same` (`text_groups`): the best-vs-* rules reject an answer with another text than the chosen one
    when there is one (two samples with one text would make an identical, linted-away pair)."""
    idx = [i for i, s in enumerate(scores) if s is not None]
    drops: dict[str, int] = {}
    if len(idx) < 2:
        return [], drops
    ok = choosable or [True] * len(scores)
    s = {i: float(scores[i]) for i in idx}  # type: ignore[arg-type]

    def drop(why: str) -> None:
        drops[why] = drops.get(why, 0) + 1

    if rule == "all-pairs":
        out = []
        for i, j in itertools.combinations(idx, 2):
            if s[i] == s[j] and not keep_ties:
                drop("tie")
                continue
            c, r = (i, j) if s[i] > s[j] or (s[i] == s[j] and (ok[i] or not ok[j])) else (j, i)
            if ok[c]:
                out.append((c, r))
            else:
                drop("truncated")
        return out, drops
    cands = [i for i in idx if ok[i]]
    if not cands:
        drop("truncated")
        return [], drops
    best = max(cands, key=lambda i: (s[i], -i))
    others = [i for i in idx if i != best]
    if same is not None:  # another text than the chosen one's, when any is left
        others = [i for i in others if same[i] != same[best]] or others
    if rule == "best-vs-worst":
        # The lowest-scored of the others (lowest index on ties). Excluding `best` matters only when
        # every score ties: `min` over all of idx would then pick `best` itself and lose the pair.
        worst = min(others, key=lambda i: (s[i], i))
        pick = [worst] if s[worst] < s[best] else []
        equal = [worst] if s[worst] == s[best] else []
    else:
        pick = [i for i in others if s[i] < s[best]]
        equal = [i for i in others if s[i] == s[best]]
    if pick:
        return [(best, rng.choice(pick))], drops
    if equal:
        if keep_ties:
            return [(best, rng.choice(equal))], drops
        drop("tie")
        return [], drops
    drop("truncated")  # only higher-scored, unchoosable (truncated) ones are left
    return [], drops


def pick_pairs(
    prompt_id: str,
    scores: list[float | None],
    cut: list[bool],
    texts: list[str],
    spec: BinarizeSpec,
    allow_truncated_chosen: bool,
) -> tuple[list[tuple[int, int]], dict[str, int]]:
    """The rule's (chosen, rejected) positions for one prompt and its other candidates' drops, seeded by
    the prompt: the same pick at build time and when a judge asks beforehand (`emitted_pairs`). `texts`:
    the answers (a rejected one differs from the chosen one where it can)."""
    seed = int(hashlib.sha256(f"{spec.seed}|{prompt_id}".encode()).hexdigest()[:12], 16)
    ok = None if allow_truncated_chosen or not any(cut) else [not t for t in cut]
    return candidate_pairs(scores, spec.rule, random.Random(seed), spec.keep_ties, ok, text_groups(texts))


def emitted_pairs(
    prompt_id: str,
    scores: list[float | None],
    cut: list[bool],
    texts: list[str],
    spec: BinarizeSpec,
    allow_truncated_chosen: bool,
) -> list[tuple[int, int]]:
    """The pairs binarization will make from these scores (before lints and other judges' verdicts): what
    a judge that `follows_ranking` compares."""
    pairs, _ = pick_pairs(prompt_id, scores, cut, texts, spec, allow_truncated_chosen)
    return [(c, r) for c, r in pairs if float(scores[c]) - float(scores[r]) >= spec.min_margin]  # type: ignore[arg-type]


def truncated(completion: dict[str, Any]) -> bool:
    """Cut at max_tokens (finish_reason "length")."""
    return completion.get("finish_reason") == "length"


def verdict_probabilities(
    verdicts: list[dict[str, Any]], score_key: str | None
) -> dict[tuple[int, int], float]:
    """(i, j) sample indices -> P(i better than j) from verdict rows with a probability: the ranking
    judge's own verdict when it gave one, else the first judge's in the row that compared the two."""
    out: dict[tuple[int, int], float] = {}
    for v in sorted(verdicts, key=lambda v: v["judge"] != score_key):  # stable: ranking judge first
        if v.get("p_x") is not None and (v["i"], v["j"]) not in out and (v["j"], v["i"]) not in out:
            out[(v["i"], v["j"])] = float(v["p_x"])
    return out


def p_chosen(probs: dict[tuple[int, int], float] | None, chosen: int, rejected: int) -> float | None:
    if not probs:
        return None
    if (chosen, rejected) in probs:
        return probs[(chosen, rejected)]
    p = probs.get((rejected, chosen))
    return None if p is None else 1 - p


def binarize_prompt(
    row: dict[str, Any],
    score_key: str,
    spec: BinarizeSpec,
    verdicts: dict[tuple[int, int], str] | None = None,
    stats: BinarizeStats | None = None,
    probs: dict[tuple[int, int], float] | None = None,
    allow_truncated_chosen: bool = False,
) -> list[PairRow]:
    """Pairs for one UltraFeedback row. `verdicts[(i, j)]` ("x"/"y"/"tie") gates pairwise pairs;
    `probs[(i, j)]` (P(i better than j), sample indices) gives `p_chosen`."""
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
    cut = [truncated(c) for c in comps]
    texts = [c["response"] for c in comps]
    pairs, drops = pick_pairs(row["prompt_id"], scores, cut, texts, spec, allow_truncated_chosen)
    stats.candidates += len(pairs) + sum(drops.values())
    stats.ties_dropped += drops.get("tie", 0)
    stats.truncated_chosen_dropped += drops.get("truncated", 0)
    if not allow_truncated_chosen and any(cut):  # pairs that differ from the pick ignoring truncation
        unaware, _ = pick_pairs(row["prompt_id"], scores, cut, texts, spec, True)
        stats.truncated_chosen_repicked += len(set(pairs) - set(unaware))
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
        flags = ["judges disagree"] if disagree(row, c, r, score_key) else []
        flags += ["truncated"] if cut[c] or cut[r] else []
        out.append(PairRow(
            prompt_id=row["prompt_id"], prompt=row["messages"],
            chosen=_assistant(comps[c]["response"]), rejected=_assistant(comps[r]["response"]),
            score_chosen=float(scores[c]), score_rejected=float(scores[r]),  # type: ignore[arg-type]
            margin=margin, chosen_model=comps[c]["model"], rejected_model=comps[r]["model"],
            origin="judge", judge=score_key,
            p_chosen=p_chosen(probs, comps[c]["sample_index"], comps[r]["sample_index"]), flags=flags,
        ))  # fmt: skip
    stats.pairs += len(out)
    return out


def best_of_n(
    row: dict[str, Any], score_key: str | None, stats: BinarizeStats, allow_truncated_chosen: bool = False
) -> dict[str, Any] | None:
    """The best-of-N SFT row: the top-scored completion, a complete one unless truncated ones are allowed."""
    scored = [c for c in row["completions"]
              if score_key and (c.get("scores") or {}).get(score_key) is not None]  # fmt: skip
    if not scored:
        return None

    def rank(c: dict[str, Any]) -> tuple[float, int]:
        return c["scores"][score_key], -c["sample_index"]

    best = max(scored, key=rank)
    if truncated(best) and not allow_truncated_chosen:
        complete = [c for c in scored if not truncated(c)]
        if not complete:
            stats.truncated_sft_dropped += 1
            return None
        stats.truncated_sft_repicked += 1
        best = max(complete, key=rank)
    return {"prompt_id": row["prompt_id"], "prompt": row["messages"],
            "chosen": [{"role": "assistant", "content": best["response"]}], "rejected": [],
            "score_chosen": float(best["scores"][score_key]), "chosen_model": best["model"],
            "origin": "best-of-n", "judge": score_key}  # fmt: skip


def is_test(prompt_id: str, fraction: float) -> bool:
    """Deterministic split by prompt id."""
    return int(hashlib.sha256(prompt_id.encode()).hexdigest()[:8], 16) / 0xFFFFFFFF < fraction
