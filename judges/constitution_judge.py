"""`ConstitutionJudge`: feedback from a constitution file, behind the judge contract.

Critique: principle -> critique -> revision; a kept revision is an extra pair, `chosen` over its
original. Label: a principle's comparison question as a multiple choice (A)/(B) in both orders, soft
P(A) from logprobs; a labelled pair is an extra pair. judge-eval asks the question for one shown order.
"""

from __future__ import annotations

import asyncio
import random
import re
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field

from judges.constitution_file import Constitution, Principle, load_constitution
from judges.contract import (
    Completion,
    CritiqueNote,
    ExtraPair,
    Judge,
    JudgeConfig,
    Judgement,
    Preference,
    Prompt,
    add,
    combine_orders,
)
from judges.helpers import choice_probability, clip, render
from serving.endpoint import RequestRejected

if TYPE_CHECKING:
    from serving.client import LLMClient

REFUSAL = re.compile(
    r"^(i'?m sorry|i am sorry|i cannot|i can'?t (revise|rewrite|help)|no (revision|changes?) (is |are )?needed"
    r"|the (original )?(answer|response) (is|was) (already )?fine|as an ai)",
    re.IGNORECASE,
)


class Critique(BaseModel):
    """One critique-and-revision of one completion under one principle."""

    principle_id: str
    principle_sha256: str
    critique: str | None = None
    revision: str | None = None
    status: Literal["kept", "identical", "empty", "refusal", "truncated", "error"] = "kept"
    error: str | None = None
    requests: int = 0


class Label(BaseModel):
    """A constitutional preference between x and y; `p_x` is the soft label (None without logprobs)."""

    principle_id: str
    principle_sha256: str
    winner: Literal["x", "y", "tie"]
    p_x: float | None = Field(default=None, ge=0, le=1)
    consistent: bool
    requests: int = 2


def pick_principles(c: Constitution, mode: str, seed: int, *key: object) -> list[Principle]:
    """All principles, or one sampled reproducibly from (seed, key)."""
    if mode == "all":
        return list(c.principles)
    return [random.Random("|".join(map(str, (seed, *key)))).choice(c.principles)]


def _norm(text: str) -> str:
    return " ".join(text.lower().split())


def revision_status(original: str, revision: str) -> str:
    if not revision.strip():
        return "empty"
    if _norm(revision) == _norm(original):
        return "identical"
    if REFUSAL.match(revision.strip()):
        return "refusal"
    return "kept"


class ConstitutionalCritic:
    """Critique then revise a response under a principle, with the constitution's few-shot examples."""

    def __init__(self, client: LLMClient, constitution: Constitution, max_tokens: int = 128,
                 allow_truncated: bool = False) -> None:  # fmt: skip
        self.client = client
        self.constitution = constitution
        self.max_tokens = max_tokens
        self.allow_truncated = allow_truncated  # a revision cut at max_tokens may still be kept

    def _shots(self, principle: Principle) -> list[dict[str, str]]:
        msgs: list[dict[str, str]] = []
        for ex in self.constitution.examples:
            msgs += [{"role": "user", "content": ex.prompt}, {"role": "assistant", "content": ex.response},
                     {"role": "user", "content": principle.critique},
                     {"role": "assistant", "content": ex.critique},
                     {"role": "user", "content": principle.revision},
                     {"role": "assistant", "content": ex.revision}]  # fmt: skip
        return msgs

    async def critique(self, prompt: str, response: str, principle: Principle) -> Critique:
        out = Critique(principle_id=principle.id, principle_sha256=principle.sha256())
        convo = self._shots(principle) + [
            {"role": "user", "content": clip(prompt)},
            {"role": "assistant", "content": clip(response)},
            {"role": "user", "content": principle.critique},
        ]
        try:
            res = await self.client.chat(convo, temperature=0.0, max_tokens=self.max_tokens)
            out.critique = res.choices[0].text.strip()
            convo += [{"role": "assistant", "content": out.critique},
                      {"role": "user", "content": principle.revision}]  # fmt: skip
            res = await self.client.chat(convo, temperature=0.0, max_tokens=self.max_tokens)
            out.revision = res.choices[0].text.strip()
        except RequestRejected as exc:
            out.status, out.error = "error", str(exc)[:200]
            return out
        finally:
            out.requests = 1 + int(out.critique is not None)
        out.status = revision_status(response, out.revision)  # type: ignore[assignment]
        if out.status == "kept" and res.choices[0].finish_reason == "length" and not self.allow_truncated:
            out.status = "truncated"  # a revision cut at max_tokens is never chosen over its original
        return out


class Labeller:
    """Labels (x, y) with a principle's comparison question, asked in both orders."""

    template = "constitutional_choice.jinja2"

    def __init__(self, client: LLMClient, logprobs: bool = True) -> None:
        self.client = client
        self.logprobs = logprobs

    async def ask(self, prompt: str, a: str, b: str, principle: Principle) -> tuple[str | None, float | None]:
        """One shown order: the letter picked ("x" = a, "y" = b, None) and P(a)."""
        text = render(self.template, prompt=clip(prompt), response_a=clip(a), response_b=clip(b),
                      question=principle.comparison)  # fmt: skip
        try:
            res = await self.client.chat(
                [{"role": "user", "content": text}], temperature=0.0, max_tokens=1,
                logprobs=self.logprobs, top_logprobs=10 if self.logprobs else None,
                extra_body={"structured_outputs": {"choice": ["A", "B"]}},
            )  # fmt: skip
        except RequestRejected:
            return None, None
        choice = res.choices[0]
        letter = choice.text.strip().strip("()").strip()[:1].upper() or None
        p_a = choice_probability(choice.logprobs, ("A", "B")) if self.logprobs else None
        return {"A": "x", "B": "y"}.get(letter or ""), p_a

    async def label(self, prompt: str, x: str, y: str, principle: Principle) -> Label:
        (fa, fp), (ba, bp) = await asyncio.gather(
            self.ask(prompt, x, y, principle), self.ask(prompt, y, x, principle)
        )
        both = combine_orders(fa, ba, fp, bp, by_probability=True)  # type: ignore[arg-type]
        return Label(principle_id=principle.id, principle_sha256=principle.sha256(), winner=both.winner,
                     p_x=both.p_x, consistent=both.consistent)  # fmt: skip


class ConstitutionConfig(JudgeConfig):
    """A constitution judge (a recipe's `critique:` section is one)."""

    type: Literal["constitution"] = "constitution"
    constitution: str = Field(description="path to a constitution YAML file")
    mode: Literal["critique", "label", "both"] = "critique"
    principles: Literal["sample", "all"] = Field(
        default="sample", description="one sampled principle, or all"
    )
    max_tokens: int = Field(default=128, ge=16)
    logprobs: bool = True

    def resolved(self, base: Path | None) -> ConstitutionConfig:
        path = Path(self.constitution).expanduser()
        if not (path.is_absolute() or path.exists() or base is None):
            path = base / path  # relative to the recipe's folder, as prompt files are
        return self.model_copy(update={"constitution": str(path.resolve())})


def label_sides(lab: Label) -> tuple[str, str]:
    """(chosen side, rejected side) of a label: "x"/"y" (x wins a tie)."""
    return ("y", "x") if lab.winner == "y" else ("x", "y")


class ConstitutionJudge(Judge):
    """Critique -> revision per completion and/or labels of completion pairs, per principle."""

    type = "constitution"
    config_class = ConstitutionConfig
    gives_scores = False
    origin = "constitution"
    templates = (Labeller.template,)

    def __init__(
        self, config: ConstitutionConfig, client: Any = None, allow_truncated_chosen: bool = False
    ) -> None:
        super().__init__(config, client, allow_truncated_chosen)
        self.cfg = config
        self.constitution = load_constitution(config.constitution)

    @classmethod
    def stage_of(cls, config: JudgeConfig) -> str:
        return "critique" if config.key == cls.type else f"critique:{config.key}"

    def extra_files(self) -> list[Path]:
        return [Path(self.cfg.constitution)]

    def provenance(self) -> dict[str, str]:
        return {"constitution_sha256": self.constitution.sha256}

    def per_item(self) -> int:
        return len(self.constitution.principles) if self.cfg.principles == "all" else 1

    def requests_per_prompt(self, n: int) -> int:
        k, out = self.per_item(), 0
        if self.cfg.mode in ("critique", "both"):
            out += 2 * n * k
        if self.cfg.mode in ("label", "both"):
            out += 2 * (n // 2) * k
        return out

    def longest_chain(self) -> int:
        return (2 if self.cfg.mode != "label" else 0) * self.cfg.max_tokens + 1

    async def judge(self, prompt: Prompt, completions: list[Completion]) -> Judgement:
        c, s, pid = self.constitution, self.cfg, prompt.prompt_id
        critic = ConstitutionalCritic(self.client, c, s.max_tokens, self.allow_truncated_chosen)
        labeller = Labeller(self.client, logprobs=s.logprobs)
        crit_jobs, label_jobs = [], []
        if s.mode in ("critique", "both"):
            for r in completions:
                for p in pick_principles(c, s.principles, s.seed, pid, r.sample_index):
                    crit_jobs.append((r, critic.critique(prompt.prompt, r.response, p)))
        if s.mode in ("label", "both"):
            for a, b in zip(completions[0::2], completions[1::2]):
                for p in pick_principles(c, s.principles, s.seed, pid, a.sample_index, "label"):
                    label_jobs.append((a, b, labeller.label(prompt.prompt, a.response, b.response, p)))
        crits = list(await asyncio.gather(*(j for _, j in crit_jobs)))
        labels = list(await asyncio.gather(*(j for _, _, j in label_jobs)))
        out = Judgement(scores=[None] * len(completions), candidates=len(crits) + len(labels))
        per: dict[str, Any] = {}
        first: dict[int, Critique] = {}  # the row shows the first kept critique (else the first one)
        for (r, _), cr in zip(crit_jobs, crits):
            out.requests += cr.requests
            if r.sample_index not in first or (
                cr.status == "kept" and first[r.sample_index].status != "kept"
            ):
                first[r.sample_index] = cr
            d = per.setdefault(cr.principle_id, {"critiques": 0, "pairs": 0, "dropped": 0})
            d["critiques"] += 1
            d["pairs" if cr.status == "kept" else "dropped"] += 1
            if cr.status != "kept":
                add(d, f"dropped_{cr.status}")
                add(out.dropped, f"revision_{cr.status}")
                continue
            out.pairs.append(ExtraPair(
                chosen=cr.revision or "", rejected=r.response, score_chosen=1.0, score_rejected=0.0, margin=1.0,
                chosen_model=f"{r.model}+revision", rejected_model=r.model, origin=self.origin,
                judge="constitution:critique", principle_id=cr.principle_id, principle_sha256=cr.principle_sha256,
            ))  # fmt: skip
        for (a, b, _), lab in zip(
            label_jobs, labels
        ):  # a tie is kept with margin 0: `build` applies keep_ties
            out.requests += lab.requests
            win, lose = label_sides(lab)
            side = {"x": a, "y": b}
            cut = not self.allow_truncated_chosen and side[win].cut
            d = per.setdefault(lab.principle_id, {"critiques": 0, "pairs": 0, "dropped": 0})
            d["pairs" if lab.winner != "tie" and not cut else "dropped"] += 1
            add(out.detail, "labels")
            add(out.detail, "labels_consistent", int(lab.consistent))
            add(out.detail, "labels_soft", int(lab.p_x is not None))
            if cut:  # a label whose chosen answer was cut at max_tokens gives no pair
                add(d, "dropped_truncated_chosen")
                add(out.dropped, "label_truncated_chosen")
                continue
            p = lab.p_x if lab.p_x is not None else {"x": 1.0, "y": 0.0, "tie": 0.5}[lab.winner]
            pc = 0.5 if lab.winner == "tie" else (p if win == "x" else 1 - p)
            out.pairs.append(ExtraPair(
                chosen=side[win].response, rejected=side[lose].response, score_chosen=pc, score_rejected=1 - pc,
                margin=2 * pc - 1, p_chosen=None if lab.p_x is None else (lab.p_x if win == "x" else 1 - lab.p_x),
                chosen_model=side[win].model, rejected_model=side[lose].model, origin=self.origin,
                judge="constitution:label", principle_id=lab.principle_id, principle_sha256=lab.principle_sha256,
            ))  # fmt: skip
        out.detail["per_principle"] = per
        out.critiques = [
            CritiqueNote(principle_id=cr.principle_id, critique=cr.critique, revision=cr.revision)
            if (cr := first.get(r.sample_index))
            else None
            for r in completions
        ]
        return out

    async def prefer(self, prompt: Prompt, first: str, second: str) -> Preference:
        """Each picked principle's question for this shown order: P(first) is the mean soft label and
        decides the winner (without logprobs: the letters' majority). The same principle(s) for both
        orders of a pair: the sample is keyed by the unordered pair."""
        principles = pick_principles(self.constitution, self.cfg.principles, self.cfg.seed, prompt.prompt,
                                     *sorted((first, second)))  # fmt: skip
        labeller = Labeller(self.client, logprobs=self.cfg.logprobs)
        asks = await asyncio.gather(*(labeller.ask(prompt.prompt, first, second, p) for p in principles))
        letters = [a for a, _ in asks if a is not None]
        probs = [p for _, p in asks if p is not None]
        failures = len(asks) - len(letters)
        if not letters and not probs:
            return Preference(winner=None, parse_failures=failures)
        p_x = sum(probs) / len(probs) if probs else None
        lead = p_x - 0.5 if p_x is not None else letters.count("x") - letters.count("y")
        winner = "x" if lead > 0 else "y" if lead < 0 else "tie"
        return Preference(winner=winner, p_x=p_x, parse_failures=failures)  # type: ignore[arg-type]

    def figures(self, t: dict[str, Any]) -> dict[str, Any]:
        f = super().figures(t)
        c = self.constitution
        labels = int(t.get("labels", 0))
        label = (f"{labels} labelled pairs, hard-label position consistency "
                 f"{t.get('labels_consistent', 0) / labels:.2f}, {int(t.get('labels_soft', 0))} soft labels "
                 "from logprobs") if labels else ""  # fmt: skip
        kept = sum(int(n.get("pairs", 0)) for n in t.get("per_principle", {}).values())
        f["quality"] = f"{int(t.get('candidates', 0))} critiques and labels, {kept} pairs"
        lines = ["## Constitution", "", f"`{c.name}` v{c.version} (file `{Path(c.path).name}`), sha256 `{c.sha256[:16]}…`, "
                 f"mode `{self.cfg.mode}`.", "",
                 "| principle | critiques | pairs kept | dropped (why: identical, refusal, empty) |", "|---|---|---|---|"]  # fmt: skip
        for pid, n in t.get("per_principle", {}).items():
            why = ", ".join(
                f"{k.removeprefix('dropped_')} {v}" for k, v in sorted(n.items()) if k.startswith("dropped_")
            )
            lines.append(f"| {pid} | {n.get('critiques', 0)} | {n.get('pairs', 0)} | {n.get('dropped', 0)}"
                         f"{f' ({why})' if why else ''} |")  # fmt: skip
        if label:
            lines += ["", f"Constitutional labels: {label}"]
        f.update(section="\n".join(lines) + "\n", per_principle=t.get("per_principle", {}), label=label,
                 constitution=c.provenance())  # fmt: skip
        return f
