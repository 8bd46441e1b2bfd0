"""One prompt's results -> its UltraFeedback row, its constitution pairs, and the tallies the card sums.

Runs inside the shard task, so rows are assembled where the work happened and `build` only streams.
"""

from __future__ import annotations

from typing import Any

from flows.dataset.binarize import PairRow
from judges.contract import Judgement, add


def first_kept(crits: list[dict[str, Any]]) -> dict[int, dict[str, Any]]:
    """sample_index -> the first kept critique (else the first one) for the UltraFeedback row."""
    out: dict[int, dict[str, Any]] = {}
    for c in crits:
        k = c["sample_index"]
        if k not in out or (c["status"] == "kept" and out[k].get("status") != "kept"):
            out[k] = c
    return out


def prompt_row(
    prompt: Any, comps: list[dict[str, Any]], judged: dict[str, Judgement], primary: str | None,
    crits: list[dict[str, Any]],
) -> dict[str, Any]:  # fmt: skip
    """The UltraFeedback row of one prompt (without provenance, which `build` adds). `judged[key]`
    lists scores in `comps` order; `primary` is the judge whose annotations fill the aspect columns."""
    verdicts = [{"judge": key, "i": comps[v.i]["sample_index"], "j": comps[v.j]["sample_index"],
                 "winner": v.winner, "consistent": v.consistent, "p_x": v.p_x}
                for key, j in judged.items() for v in j.verdicts]  # fmt: skip
    crit = first_kept(crits)
    main = judged.get(primary or "")
    out = []
    for pos, c in enumerate(comps):
        scores = {key: j.scores[pos] for key, j in judged.items()}
        cr = crit.get(c["sample_index"], {})
        out.append({
            "sample_index": c["sample_index"], "model": c["model"], "response": c["response"],
            "sampling": c["sampling"], "finish_reason": c["finish_reason"],
            "completion_tokens": c["completion_tokens"],
            "annotations": main.annotations[pos] if main and main.annotations else None,
            "fine_grained_score": main.scores[pos] if main else None, "scores": scores or None,
            "critique": cr.get("critique"), "revision": cr.get("revision"), "principle_id": cr.get("principle_id"),
        })  # fmt: skip
    return {"prompt_id": prompt.prompt_id, "prompt": prompt.prompt, "messages": prompt.messages,
            "source": prompt.source, "completions": out, "pairwise_verdicts": verdicts}  # fmt: skip


def label_winner(lab: dict[str, Any]) -> tuple[str, str]:
    """(chosen side, rejected side) of a label: "x"/"y" (x wins a tie)."""
    return ("y", "x") if lab["winner"] == "y" else ("x", "y")


def label_chosen_cut(lab: dict[str, Any], allow_cut: bool) -> bool:
    """The label would choose an answer cut at max_tokens (never chosen unless the recipe allows it)."""
    return not allow_cut and bool(lab.get(f"{label_winner(lab)[0]}_cut"))


def constitution_pairs(
    messages: list[dict[str, str]], prompt_id: str, crits: list[dict], labels: list[dict],
    allow_cut: bool = False,
) -> list[PairRow]:  # fmt: skip
    """Kept revisions beat their original (margin 1); labels give chosen/rejected with margin
    2 P(chosen) - 1 (0 for a tie) and, when the label has logprobs, `p_chosen` = the judge's P(chosen).
    A label whose chosen answer was cut at max_tokens gives no pair (counted by `tally_critique`)."""
    out = []
    for c in crits:
        if c["status"] != "kept":
            continue
        out.append(PairRow(
            prompt_id=prompt_id, prompt=messages,
            chosen=[{"role": "assistant", "content": c["revision"]}],
            rejected=[{"role": "assistant", "content": c["response"]}],
            score_chosen=1.0, score_rejected=0.0, margin=1.0, chosen_model=f"{c['model']}+revision",
            rejected_model=c["model"], origin="constitution", judge="constitution:critique",
            principle_id=c["principle_id"], principle_sha256=c["principle_sha256"],
        ))  # fmt: skip
    for lab in labels:  # a tie is kept with margin 0: `build` applies keep_ties and min_margin
        if label_chosen_cut(lab, allow_cut):
            continue
        win, lose = label_winner(lab)
        p = lab["p_x"] if lab["p_x"] is not None else {"x": 1.0, "y": 0.0, "tie": 0.5}[lab["winner"]]
        pc = 0.5 if lab["winner"] == "tie" else (p if win == "x" else 1 - p)
        out.append(PairRow(
            prompt_id=prompt_id, prompt=messages,
            chosen=[{"role": "assistant", "content": lab[win]}],
            rejected=[{"role": "assistant", "content": lab[lose]}],
            score_chosen=pc, score_rejected=1 - pc, margin=2 * pc - 1,
            p_chosen=None if lab["p_x"] is None else (lab["p_x"] if win == "x" else 1 - lab["p_x"]),
            chosen_model=lab[f"{win}_model"], rejected_model=lab[f"{lose}_model"],
            origin="constitution", judge="constitution:label",
            principle_id=lab["principle_id"], principle_sha256=lab["principle_sha256"],
        ))  # fmt: skip
    return out


def tally_critique(t: dict[str, Any], crits: list[dict], labels: list[dict], allow_cut: bool = False) -> None:
    """Per-principle counts, and every candidate pair (a critique or a label: `rows`) that gave no pair
    here under `skipped` with its reason (`build` drops ties and small margins later)."""
    per = t.setdefault("per_principle", {})
    skipped = t.setdefault("skipped", {})
    for c in crits:
        d = per.setdefault(c["principle_id"], {"critiques": 0, "pairs": 0, "dropped": 0})
        d["critiques"] += 1
        d["pairs" if c["status"] == "kept" else "dropped"] += 1
        if c["status"] != "kept":
            add(d, f"dropped_{c['status']}")
            add(skipped, f"revision_{c['status']}")
    for lab in labels:
        d = per.setdefault(lab["principle_id"], {"critiques": 0, "pairs": 0, "dropped": 0})
        cut = label_chosen_cut(lab, allow_cut)
        d["pairs" if lab["winner"] != "tie" and not cut else "dropped"] += 1
        if cut:
            add(d, "dropped_truncated_chosen")
            add(skipped, "label_truncated_chosen")
        add(t, "labels")
        add(t, "labels_consistent", int(lab["consistent"]))
        add(t, "labels_soft", int(lab["p_x"] is not None))
    add(t, "rows", len(crits) + len(labels))


def merge(into: dict[str, Any], part: dict[str, Any]) -> dict[str, Any]:
    """Deep sum of tallies (numbers add, dicts merge, other values are taken from `part`)."""
    for k, v in part.items():
        if isinstance(v, dict):
            merge(into.setdefault(k, {}), v)
        elif isinstance(v, (int, float)) and not isinstance(v, bool):
            into[k] = into.get(k, 0) + v
        else:
            into[k] = v
    return into
