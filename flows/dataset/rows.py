"""One prompt's results -> its UltraFeedback row and the extra pairs its judges made (e.g. revisions).

Runs inside the shard task, so rows are assembled where the work happened and `build` only streams.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel

from flows.dataset.binarize import PairRow
from judges.contract import Completion, Judgement, Prompt


class PromptResult(BaseModel):
    """A prompt that was answered: its completions and every judge's judgement (by judge key)."""

    prompt: Prompt
    completions: list[Completion]
    judged: dict[str, Judgement]


def prompt_row(r: PromptResult, primary: str | None, scoring: list[str], noting: list[str]) -> dict[str, Any]:
    """The UltraFeedback row of one prompt (without provenance, which `build` adds). `primary` is the
    judge whose annotations fill the aspect columns; `scoring` the judges with a score column, `noting`
    those with a notes column; the critique columns come from the first judge that gives critiques."""
    comps, judged = r.completions, r.judged
    verdicts = [{"judge": key, "i": comps[v.i].sample_index, "j": comps[v.j].sample_index,
                 "winner": v.winner, "consistent": v.consistent, "p_x": v.p_x}
                for key, j in judged.items() for v in j.verdicts]  # fmt: skip
    main = judged.get(primary or "")
    crit = next((j.critiques for j in judged.values() if j.critiques is not None), None)
    out = []
    for pos, c in enumerate(comps):
        cr = crit[pos] if crit else None
        row = {
            "sample_index": c.sample_index, "model": c.model, "response": c.response,
            "sampling": c.sampling.model_dump(), "finish_reason": c.finish_reason,
            "completion_tokens": c.completion_tokens,
            "annotations": main.annotations[pos] if main and main.annotations else None,
            "fine_grained_score": main.scores[pos] if main else None,
            "scores": {key: judged[key].scores[pos] for key in scoring if key in judged} or None,
            "critique": cr.critique if cr else None, "revision": cr.revision if cr else None,
            "principle_id": cr.principle_id if cr else None,
        }  # fmt: skip
        if noting:
            row["notes"] = {k: (judged[k].notes or [None] * len(comps))[pos] for k in noting if k in judged}
        out.append(row)
    p = r.prompt
    return {"prompt_id": p.prompt_id, "prompt": p.prompt, "messages": p.messages, "source": p.source,
            "completions": out, "pairwise_verdicts": verdicts}  # fmt: skip


def extra_pairs(r: PromptResult) -> list[PairRow]:
    """The pairs the judges made themselves (kept revisions over their originals, labelled pairs), as
    pair rows; `build` applies keep_ties and the margins to them."""
    p = r.prompt
    return [
        PairRow(
            prompt_id=p.prompt_id,
            prompt=p.messages,
            chosen=[{"role": "assistant", "content": e.chosen}],
            rejected=[{"role": "assistant", "content": e.rejected}],
            score_chosen=e.score_chosen,
            score_rejected=e.score_rejected,
            margin=e.margin,
            p_chosen=e.p_chosen,
            chosen_model=e.chosen_model,
            rejected_model=e.rejected_model,
            origin=e.origin,
            judge=e.judge,
            principle_id=e.principle_id,
            principle_sha256=e.principle_sha256,
        )  # fmt: skip
        for j in r.judged.values()
        for e in j.pairs
    ]
