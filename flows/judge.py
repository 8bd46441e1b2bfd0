"""Judge stage: each configured judge rates/compares the completions of each generate shard.

One judge shard per (generate shard, judge); a finished judge shard is never requested again.
"""

from __future__ import annotations

import asyncio
import hashlib
import itertools
import json
import time
from collections import defaultdict
from pathlib import Path
from typing import Any

from prefect import flow, task
from prefect.cache_policies import INPUTS, TASK_SOURCE

from flows import progress
from flows.generate import StageResult
from flows.recipe import JudgeSpec
from flows.shards import read_json, write_json
from judges.base import TEMPLATES
from judges.pairwise import PairwiseJudge
from judges.ultrafeedback import UltraFeedbackJudge
from serving.client import ClientConfig, Endpoint, io_loop, shared_client


def templates_sha(kind: str, reward_model: str | None = None) -> str:
    """Hash of what shapes a judge's answers besides its spec: templates, or the reward model files."""
    h = hashlib.sha256()
    if kind == "reward_model" and reward_model:
        for name in ("config.json", "metrics.json", "reward_normalization.json"):
            p = Path(reward_model) / name
            if p.exists():
                h.update(p.read_bytes())
    for p in sorted(TEMPLATES.rglob("*.jinja2")):
        if kind == "ultrafeedback" and "ultrafeedback" in p.parts or p.stem == kind:
            h.update(p.read_bytes())
    return h.hexdigest()[:16]


def group_by_prompt(rows: list[dict[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    groups: dict[str, list[dict[str, Any]]] = defaultdict(list)
    for r in rows:
        groups[r["prompt_id"]].append(r)
    return {k: sorted(v, key=lambda r: r["sample_index"]) for k, v in groups.items()}


def _reward_model_prompts(spec: JudgeSpec, groups: dict[str, list[dict]]) -> dict:
    from judges.reward_model import RewardModelJudge

    judge = RewardModelJudge(spec.reward_model or "")
    out = {}
    for pid, rows in groups.items():
        scores = judge.judge(rows[0]["messages"], [r["response"] for r in rows])
        progress.advance("prompts")
        out[pid] = {"sample_indices": [r["sample_index"] for r in rows], "scores": [s.score for s in scores],
                    "requests": 0, "parse_failures": 0}  # fmt: skip
    return out


async def _judge_prompts(spec: JudgeSpec, client: Any, groups: dict[str, list[dict]]) -> dict:
    out: dict[str, Any] = {}
    if spec.type == "ultrafeedback":
        uf = UltraFeedbackJudge(client, spec.aspects, spec.max_tokens, spec.temperature,
                                spec.structured, spec.seed)  # fmt: skip

        async def one(pid: str, rows: list[dict]) -> None:
            res = await uf.judge(pid, rows[0]["prompt"], [r["response"] for r in rows])
            progress.advance("prompts")
            out[pid] = {"sample_indices": [r["sample_index"] for r in rows], **res.model_dump()}

    else:
        pw = PairwiseJudge(client, min(spec.max_tokens, 128), spec.temperature, spec.structured,
                           spec.logprobs)  # fmt: skip

        async def one(pid: str, rows: list[dict]) -> None:
            pairs = list(itertools.combinations(range(len(rows)), 2))
            verdicts = await asyncio.gather(*(pw.compare(rows[i]["prompt"], rows[i]["response"],
                                                         rows[j]["response"]) for i, j in pairs))  # fmt: skip
            progress.advance("prompts")
            out[pid] = {
                "sample_indices": [r["sample_index"] for r in rows],
                "pairs": [
                    {"i": rows[i]["sample_index"], "j": rows[j]["sample_index"], **v.model_dump()}
                    for (i, j), v in zip(pairs, verdicts)
                ],  # fmt: skip
                "requests": 2 * len(pairs),
                "parse_failures": sum(v.parse_failures for v in verdicts),
            }

    await asyncio.gather(*(one(pid, rows) for pid, rows in groups.items()))
    return out


def judge_shard(
    gen_shard: str,
    spec: JudgeSpec,
    endpoints: list[Endpoint],
    client_config: ClientConfig,
    out_dir: str,
    template_sha: str,
) -> str:
    """Judge one generate shard with one judge; returns the judge shard path (cached on disk)."""
    key = hashlib.sha256(json.dumps([Path(gen_shard).name, spec.model_dump(), template_sha],
                                    sort_keys=True).encode()).hexdigest()[:20]  # fmt: skip
    path = Path(out_dir) / "judge" / spec.key / f"shard-{key}.json"
    if path.exists():
        return str(path)
    rows = read_json(Path(gen_shard))["rows"]
    client = shared_client(endpoints, client_config)
    t0 = time.monotonic()
    before = client.counters.model_copy()
    if spec.type == "reward_model":
        judged = _reward_model_prompts(spec, group_by_prompt(rows))
    else:
        judged = io_loop().run(_judge_prompts(spec, client, group_by_prompt(rows)))
    after = client.counters
    write_json(path, {
        "stage": "judge", "judge": spec.key, "type": spec.type, "generate_shard": Path(gen_shard).name,
        "endpoint_model": spec.reward_model if spec.type == "reward_model" else endpoints[0].model,
        "prompts": judged,
        "requests": sum(v.get("requests", 0) for v in judged.values()),
        "parse_failures": sum(v.get("parse_failures", 0) for v in judged.values()),
        "prompt_tokens": after.prompt_tokens - before.prompt_tokens,
        "completion_tokens": after.completion_tokens - before.completion_tokens,
        "wall_s": time.monotonic() - t0,
    })  # fmt: skip
    return str(path)


def summarize_judge(
    shards: list[str], out_dir: str, wall_s: float, requests: int, new_tokens: int
) -> StageResult:
    res = StageResult(stage="judge", shards=shards, out_dir=out_dir, wall_s=wall_s, requests=requests,
                      new_completion_tokens=new_tokens)  # fmt: skip
    for s in shards:
        d = read_json(Path(s))
        res.rows += len(d["prompts"])
        res.prompt_tokens += d.get("prompt_tokens", 0)
        res.completion_tokens += d.get("completion_tokens", 0)
        if d.get("parse_failures"):
            res.skipped["parse_failures"] = res.skipped.get("parse_failures", 0) + d["parse_failures"]
    res.prompts = res.rows
    return res


@task(
    name="judge-shard",
    cache_policy=(INPUTS - "endpoints" - "client_config") + TASK_SOURCE,
    retries=1,
    retry_delay_seconds=5,
)
def judge_shard_task(
    gen_shard: str,
    spec: JudgeSpec,
    endpoints: list[Endpoint],
    client_config: ClientConfig,
    out_dir: str,
    template_sha: str,
) -> str:
    return judge_shard(gen_shard, spec, endpoints, client_config, out_dir, template_sha)


@flow(name="rlaif-judge")
def judge_flow(
    gen_shards: list[str],
    judges: list[tuple[JudgeSpec, list[Endpoint]]],
    out_dir: str,
    client_config: ClientConfig | None = None,
    n_prompts: int = 0,
) -> StageResult:
    """Every (shard, judge) pair as a cached task, all in flight together."""
    from flows.runner import map_cached

    cfg = client_config or ClientConfig()
    t0 = time.monotonic()
    clients = {id(c): c for c in (shared_client(eps, cfg) for _, eps in judges)}.values()
    before = [(c.counters.requests, c.counters.completion_tokens) for c in clients]
    shas = [templates_sha(spec.type, spec.reward_model) for spec, _ in judges]  # once per judge
    calls = [dict(gen_shard=s, spec=spec, endpoints=eps, client_config=cfg, out_dir=out_dir, template_sha=sha)
             for (spec, eps), sha in zip(judges, shas) for s in gen_shards]  # fmt: skip
    with progress.bars({"batches": len(calls), "prompts": n_prompts * len(judges)}, "judge"):
        shards = (map_cached(judge_shard_task, calls, out_dir,
                             lambda path: progress.advance("prompts", len(read_json(Path(path))["prompts"])))
                  if calls else [])  # fmt: skip
    requests = sum(c.counters.requests - b[0] for c, b in zip(clients, before))
    tokens = sum(c.counters.completion_tokens - b[1] for c, b in zip(clients, before))
    return summarize_judge(shards, out_dir, time.monotonic() - t0, requests, tokens)
