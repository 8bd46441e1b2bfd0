"""The two output schemas as `datasets.Features`: UltraFeedback rows and binarized pairs.

Fixed from the recipe (aspects, judge names) so every shard writes the same Arrow schema.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:  # `datasets` takes ~0.7 s to import: only the functions below need it
    from datasets import Features

UF_DIR = (
    "ultrafeedback"  # the UltraFeedback-style dataset's folder (OUT/ultrafeedback, OUT/parquet/ultrafeedback)
)


def binarized_features() -> Features:
    """One schema for all four splits (as in HuggingFaceH4/ultrafeedback_binarized), plus `p_chosen`: a
    judge's P(chosen better) from logprobs, both orders averaged; null without one (soft labels);
    `pair_id`: the pair's stable id (review decisions name it); `flags`: what a reviewer should see first."""
    from datasets import Features, List, Value

    MSGS = List({"role": Value("string"), "content": Value("string")})
    return Features({
        "prompt_id": Value("string"), "prompt": MSGS, "chosen": MSGS, "rejected": MSGS, "messages": MSGS,
        "score_chosen": Value("float64"), "score_rejected": Value("float64"), "margin": Value("float64"),
        "p_chosen": Value("float64"), "chosen_model": Value("string"), "rejected_model": Value("string"),
        "origin": Value("string"), "judge": Value("string"), "principle_id": Value("string"),
        "principle_sha256": Value("string"), "pair_id": Value("string"), "flags": List(Value("string")),
    })  # fmt: skip


def uf_features(
    aspects: list[str],
    judge_keys: list[str],
    with_provenance: bool = True,
    note_keys: list[str] | None = None,
) -> Features:
    """UltraFeedback rows: one per prompt, `completions[]` with annotations and every judge's score."""
    from datasets import Features, List, Value

    MSGS = List({"role": Value("string"), "content": Value("string")})
    rating = {"rating": Value("int64"), "rationale": Value("string"), "error": Value("string")}
    comp: dict[str, Any] = {
        "sample_index": Value("int64"), "model": Value("string"), "response": Value("string"),
        "sampling": {"temperature": Value("float64"), "top_p": Value("float64"), "max_tokens": Value("int64"),
                     "seed": Value("int64")},
        "finish_reason": Value("string"), "completion_tokens": Value("int64"),
    }  # fmt: skip
    if aspects:
        comp["annotations"] = {a: rating for a in aspects}
    comp["fine_grained_score"] = Value("float64")
    if judge_keys:
        comp["scores"] = {k: Value("float64") for k in judge_keys}
    if note_keys:  # why each judge that explains its scores gave them (e.g. a verifier)
        comp["notes"] = {k: Value("string") for k in note_keys}
    comp.update(critique=Value("string"), revision=Value("string"), principle_id=Value("string"))
    feats: dict[str, Any] = {
        "prompt_id": Value("string"), "prompt": Value("string"), "messages": MSGS, "source": Value("string"),
        "completions": List(comp),
        "pairwise_verdicts": List({"judge": Value("string"), "i": Value("int64"), "j": Value("int64"),
                                   "winner": Value("string"), "consistent": Value("bool"),
                                   "p_x": Value("float64")}),
    }  # fmt: skip
    if with_provenance:
        feats["provenance"] = {
            "policy": Value("string"), "judges": List(Value("string")), "constitution_sha256": Value("string"),
            "recipe_sha256": Value("string"), "created_at": Value("string"), "rlaif_version": Value("string"),
        }  # fmt: skip
    return Features(feats)
