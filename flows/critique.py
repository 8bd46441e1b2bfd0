"""Critique stage: constitution-driven critique-and-revision pairs and principle-based labels.

Each (completion, principle) or (pair, principle) item is cached on disk by the sha256 of the
principle text and the inputs, so editing one principle recomputes only the items that used it.
"""

from __future__ import annotations

import asyncio
import hashlib
import json
import time
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE
from pydantic import BaseModel, Field, PrivateAttr

from flows import progress
from flows.binarize import PairRow
from flows.generate import StageResult
from flows.judge import group_by_prompt, templates_sha
from flows.recipe import CritiqueSpec
from flows.shards import read_json, write_json
from judges.constitution import Constitution
from judges.constitutional import ConstitutionalCritic, ConstitutionalJudge, pick_principles
from serving.client import ClientConfig, Endpoint, io_loop, shared_client


def item_key(*parts: Any) -> str:
    return hashlib.sha256(json.dumps(parts, sort_keys=True, default=str).encode()).hexdigest()[:24]


async def _cached(cache_dir: Path, key: str, make: Any) -> dict[str, Any]:
    path = cache_dir / f"{key}.json"
    if path.exists():
        return {**read_json(path), "cached": True}
    value = (await make()).model_dump()
    if value.get("status") != "error":
        write_json(path, value)
    return {**value, "cached": False}


async def _critique_rows(
    spec: CritiqueSpec, c: Constitution, client: Any, groups: dict[str, list[dict]], model: str,
    cache_dir: Path,
) -> tuple[list[dict], list[dict]]:  # fmt: skip
    critic = ConstitutionalCritic(client, c, spec.max_tokens)
    judge = ConstitutionalJudge(client, logprobs=True)
    crit_jobs, label_jobs = [], []
    choice_sha = templates_sha("constitutional_choice")  # editing the A/B template re-labels
    for pid, rows in groups.items():
        prompt = rows[0]["prompt"]
        if spec.mode in ("critique", "both"):
            for r in rows:
                for p in pick_principles(c, spec.principles, spec.seed, pid, r["sample_index"]):
                    key = item_key("critique", p.sha256(), [e.model_dump() for e in c.examples], prompt,
                                   r["response"], model, spec.max_tokens)  # fmt: skip
                    crit_jobs.append((r, p, key))
        if spec.mode in ("label", "both"):
            for a, b in zip(rows[0::2], rows[1::2]):
                for p in pick_principles(c, spec.principles, spec.seed, pid, a["sample_index"], "label"):
                    key = item_key(
                        "label", p.sha256(), prompt, a["response"], b["response"], model, choice_sha
                    )
                    label_jobs.append((a, b, p, key))

    async def do_crit(r: dict, p: Any, key: str) -> dict:
        res = await _cached(cache_dir, key, lambda: critic.critique(r["prompt"], r["response"], p))
        progress.advance("items")
        return {"prompt_id": r["prompt_id"], "sample_index": r["sample_index"], "messages": r["messages"],
                "response": r["response"], "model": r["model"], **res}  # fmt: skip

    async def do_label(a: dict, b: dict, p: Any, key: str) -> dict:
        res = await _cached(cache_dir, key, lambda: judge.label(a["prompt"], a["response"], b["response"], p))
        progress.advance("items")
        return {"prompt_id": a["prompt_id"], "i": a["sample_index"], "j": b["sample_index"],
                "messages": a["messages"], "x": a["response"], "y": b["response"],
                "x_model": a["model"], "y_model": b["model"], **res}  # fmt: skip

    crits = await asyncio.gather(*(do_crit(*j) for j in crit_jobs))
    labels = await asyncio.gather(*(do_label(*j) for j in label_jobs))
    return list(crits), list(labels)


def critique_shard(
    gen_shard: str, spec: CritiqueSpec, constitution: Constitution, endpoints: list[Endpoint],
    client_config: ClientConfig, out_dir: str, constitution_sha: str,
) -> str:  # fmt: skip
    """Critique/label one generate shard; the shard file is keyed by the constitution's hash."""
    key = item_key(Path(gen_shard).name, spec.model_dump(), constitution_sha, endpoints[0].model)[:20]
    path = Path(out_dir) / "critique" / f"shard-{key}.json"
    if path.exists():
        return str(path)
    client = shared_client(endpoints, client_config)
    before = client.counters.model_copy()
    t0 = time.monotonic()
    groups = group_by_prompt(read_json(Path(gen_shard))["rows"])
    crits, labels = io_loop().run(_critique_rows(spec, constitution, client, groups, endpoints[0].model,
                                                 Path(out_dir) / "critique" / "items"))  # fmt: skip
    write_json(path, {
        "stage": "critique", "critiques": crits, "labels": labels,
        "requests": client.counters.requests - before.requests,
        "prompt_tokens": client.counters.prompt_tokens - before.prompt_tokens,
        "completion_tokens": client.counters.completion_tokens - before.completion_tokens,
        "wall_s": time.monotonic() - t0,
    })  # fmt: skip
    return str(path)


@task(name="critique-shard", cache_policy=(INPUTS - "endpoints" - "client_config") + TASK_SOURCE,
      retries=1, retry_delay_seconds=5)  # fmt: skip
def critique_shard_task(
    gen_shard: str, spec: CritiqueSpec, constitution: Constitution, endpoints: list[Endpoint],
    client_config: ClientConfig, out_dir: str, constitution_sha: str,
) -> str:  # fmt: skip
    return critique_shard(gen_shard, spec, constitution, endpoints, client_config, out_dir, constitution_sha)


class CritiqueResult(BaseModel):
    stage: StageResult
    constitution: dict[str, str] = Field(default_factory=dict)

    _loaded: dict[str, list[dict[str, Any]]] | None = PrivateAttr(default=None)

    def _items(self, kind: str) -> list[dict[str, Any]]:
        """Critique or label records of every shard (read once, then kept)."""
        if self._loaded is None:
            data = [read_json(Path(s)) for s in self.stage.shards]
            self._loaded = {k: [x for d in data for x in d[k]] for k in ("critiques", "labels")}
        return self._loaded[kind]

    def critiques(self) -> dict[tuple[str, int], dict[str, Any]]:
        """(prompt_id, sample_index) -> the first kept critique/revision (for the UltraFeedback rows)."""
        out: dict[tuple[str, int], dict[str, Any]] = {}
        for c in self._items("critiques"):
            k = (c["prompt_id"], c["sample_index"])
            if k not in out or (c["status"] == "kept" and out[k].get("status") != "kept"):
                out[k] = c
        return out

    def pairs(self) -> list[PairRow]:
        out = []
        for c in self._items("critiques"):
            if c["status"] != "kept":
                continue
            out.append(PairRow(
                prompt_id=c["prompt_id"], prompt=c["messages"],
                chosen=[{"role": "assistant", "content": c["revision"]}],
                rejected=[{"role": "assistant", "content": c["response"]}],
                score_chosen=1.0, score_rejected=0.0, margin=1.0, chosen_model=f"{c['model']}+revision",
                rejected_model=c["model"], origin="constitution", judge="constitution:critique",
                principle_id=c["principle_id"], principle_sha256=c["principle_sha256"],
            ))  # fmt: skip
        for lab in self._items("labels"):
            if lab["winner"] == "tie":
                continue
            win, lose = ("x", "y") if lab["winner"] == "x" else ("y", "x")
            p = lab["p_x"] if lab["p_x"] is not None else (1.0 if win == "x" else 0.0)
            pc = p if win == "x" else 1 - p
            out.append(PairRow(
                prompt_id=lab["prompt_id"], prompt=lab["messages"],
                chosen=[{"role": "assistant", "content": lab[win]}],
                rejected=[{"role": "assistant", "content": lab[lose]}],
                score_chosen=pc, score_rejected=1 - pc, margin=2 * pc - 1,
                chosen_model=lab[f"{win}_model"], rejected_model=lab[f"{lose}_model"],
                origin="constitution", judge="constitution:label",
                principle_id=lab["principle_id"], principle_sha256=lab["principle_sha256"],
            ))  # fmt: skip
        return out

    def card_info(self, spec: CritiqueSpec) -> dict[str, Any]:
        per: dict[str, dict[str, int]] = {}
        for c in self._items("critiques"):
            d = per.setdefault(c["principle_id"], {"critiques": 0, "pairs": 0, "dropped": 0})
            d["critiques"] += 1
            d["pairs" if c["status"] == "kept" else "dropped"] += 1
            if c["status"] != "kept":
                d[f"dropped_{c['status']}"] = d.get(f"dropped_{c['status']}", 0) + 1
        labels = self._items("labels")
        for lab in labels:
            d = per.setdefault(lab["principle_id"], {"critiques": 0, "pairs": 0, "dropped": 0})
            d["pairs" if lab["winner"] != "tie" else "dropped"] += 1
        info: dict[str, Any] = {**self.constitution, "mode": spec.mode, "per_principle": per}
        if labels:
            cons = sum(lab["consistent"] for lab in labels) / len(labels)
            soft = [lab["p_x"] for lab in labels if lab["p_x"] is not None]
            info["label"] = (f"{len(labels)} labelled pairs, hard-label position consistency {cons:.2f}, "
                             f"{len(soft)} soft labels from logprobs")  # fmt: skip
        return info


@flow(name="rlaif-critique")
def critique_flow(
    gen_shards: list[str], spec: CritiqueSpec, constitution: Constitution, endpoints: list[Endpoint],
    out_dir: str, client_config: ClientConfig | None = None,
) -> CritiqueResult:  # fmt: skip
    from flows.runner import map_cached

    cfg = client_config or ClientConfig()
    client = shared_client(endpoints, cfg)
    before = client.counters.model_copy()
    t0 = time.monotonic()
    calls = [dict(gen_shard=s, spec=spec, constitution=constitution, endpoints=endpoints, client_config=cfg,
                  out_dir=out_dir, constitution_sha=constitution.sha256) for s in gen_shards]  # fmt: skip
    with progress.bars({"batches": len(calls)}, "critique"):
        shards = map_cached(critique_shard_task, calls, out_dir) if calls else []
    st = StageResult(stage="critique", shards=shards, out_dir=out_dir, wall_s=time.monotonic() - t0,
                     requests=client.counters.requests - before.requests,
                     new_completion_tokens=client.counters.completion_tokens - before.completion_tokens)  # fmt: skip
    for s in shards:
        d = read_json(Path(s))
        st.rows += len(d["critiques"]) + len(d["labels"])
        st.prompt_tokens += d.get("prompt_tokens", 0)
        st.completion_tokens += d.get("completion_tokens", 0)
        for c in d["critiques"]:
            if c["status"] != "kept":
                st.skipped[f"revision_{c['status']}"] = st.skipped.get(f"revision_{c['status']}", 0) + 1
    return CritiqueResult(stage=st, constitution=constitution.provenance())
