"""The stage engine's parts without a model: journal, prompt manifest, request replay, flow parameter size."""

from __future__ import annotations

import asyncio
import json

import pytest

from flows.dataset.prompts import iter_prompts
from flows.engine.journal import Journal
from flows.engine.manifest import read_shard, write_manifest
from flows.engine.recorded import RecordingClient, StageStats
from serving.endpoint import ChatResult, Choice, RequestRejected
from tests.helpers import write_jsonl


def test_journal_cuts_a_torn_tail_and_never_records_twice(tmp_path):
    path = tmp_path / "journal.jsonl"
    with Journal(path) as j:
        j.append({"k": "a", "t": "one"})
        j.append({"k": "b", "t": "two"})
        j.append({"k": "a", "t": "again"})  # already done: ignored
    with open(path, "ab") as f:
        f.write(b'{"k": "c", "t": "kill -9 in the mid')  # a torn last line
    with Journal(path) as j:
        assert j.loaded == 2 and j.get("a")["t"] == "one" and j.get("c") is None
        j.append({"k": "c", "t": "three"})
    lines = [json.loads(x) for x in path.read_text().splitlines()]
    assert [x["k"] for x in lines] == ["a", "b", "c"]


def test_manifest_shards_prompts_and_passes_only_references(tmp_path):
    rows = [{"prompt": f"Prompt number {i}: " + "lorem ipsum dolor sit amet " * 13} for i in range(1024)]
    data = write_jsonl(tmp_path / "p.jsonl", rows + [{"prompt": ""}, rows[0]])
    skipped: dict[str, int] = {}
    man = write_manifest(iter_prompts(str(data), skipped=skipped), skipped, tmp_path / "run", 256, str(data))
    assert man.prompts == 1024 and len(man.shards) == 4 and man.skipped == {"empty": 1, "duplicate": 1}
    assert [p.prompt for p in read_shard(man.shards[1])][:1] == [rows[256]["prompt"].strip()]
    again = write_manifest(iter_prompts(str(data)), {}, tmp_path / "run", 256, str(data))
    assert again.sha256 == man.sha256  # content hash, stable

    from flows.engine.dispatch import RunSpec
    from flows.engine.plan import make_plan
    from flows.recipe import Recipe

    recipe = Recipe.model_validate({"judges": [{"type": "ultrafeedback"}, {"type": "pairwise"}]})
    eps = {stage: m.endpoint_list() for stage, m in recipe.served_by_stage().items()}
    assert len(eps) == 3  # generate and the two judges
    spec = RunSpec(manifest_path=man.path, manifest_sha256=man.sha256, plan=make_plan(recipe, tmp_path, eps))
    params = len(spec.model_dump_json()) + len(recipe.model_dump_json())
    assert params < 64 * 1024  # whatever the dataset size (Prefect caps flow parameters at 512 KB)


class _Inner:
    """Counts calls; answers, or refuses with a status."""

    def __init__(self, status: int | None = None) -> None:
        self.calls = 0
        self.status = status

    async def chat(self, messages, **params):  # noqa: ANN001, ANN003, ANN201
        self.calls += 1
        if self.status:
            raise RequestRejected(f"HTTP {self.status} from http://x/v1", self.status)
        return ChatResult(choices=[Choice(text="hi " + messages[0]["content"], finish_reason="stop")],
                          prompt_tokens=3, completion_tokens=2)  # fmt: skip


def test_recorded_client_replays_and_journals_only_permanent_rejections(tmp_path):
    msgs = [{"role": "user", "content": "x"}]

    def run(inner: _Inner, path: str = "j.jsonl") -> tuple[str | int, StageStats]:
        stats = StageStats()
        with Journal(tmp_path / path) as j:
            client = RecordingClient(inner, j, "generate", "m", stats)
            try:
                return asyncio.run(client.chat(msgs, temperature=0.5, seed=1)).choices[0].text, stats
            except RequestRejected as exc:
                return exc.status, stats

    inner = _Inner()
    assert run(inner)[0] == "hi x" and inner.calls == 1
    text, stats = run(inner)
    assert text == "hi x" and inner.calls == 1 and stats.replayed == 1 and stats.sent == 0
    too_long = _Inner(400)
    assert run(too_long, "b.jsonl")[0] == 400 and run(too_long, "b.jsonl")[0] == 400 and too_long.calls == 1
    bad_key = _Inner(401)  # fixing the key and re-running must retry: not journalled
    with pytest.raises(RequestRejected):
        with Journal(tmp_path / "c.jsonl") as j:
            asyncio.run(RecordingClient(bad_key, j, "generate", "m", StageStats()).chat(msgs))
    assert (tmp_path / "c.jsonl").read_text() == ""


def test_stage_priorities_put_long_chains_first_and_stay_out_of_the_journal_key(tmp_path):
    from flows.engine.shard import JudgeRun, ShardPlan
    from flows.recipe import Sampling
    from judges.registry import parse_judge_config

    const = tmp_path / "c.yaml"
    const.write_text(
        '{"name": "c", "principles": [{"id": "p", "critique": "c", "revision": "r", "comparison": "q"}]}'
    )
    specs = [parse_judge_config(c) for c in ({"type": "pairwise", "max_tokens": 64},
                                             {"type": "ultrafeedback", "max_tokens": 512},
                                             {"type": "constitution", "constitution": str(const), "max_tokens": 96})]  # fmt: skip
    judges = [JudgeRun(spec=c, endpoints=[], template_sha="t") for c in specs]
    plan = ShardPlan(out_dir=str(tmp_path), policy_model="m", policy_endpoints=[], judges=judges,
                     sampling=Sampling(max_tokens=96))  # fmt: skip
    chains = plan.chain_tokens()
    assert set(chains) == {"generate", "critique", *(f"judge:{j.spec.key}" for j in judges[:2])}
    order = sorted(chains, key=lambda s: -chains[s])
    assert order[0] == "generate" and order[-1] == f"judge:{judges[0].spec.key}"  # pairwise: shortest
    assert chains["critique"] > chains[f"judge:{judges[0].spec.key}"]  # critique -> revision is a chain

    class Seen(_Inner):
        async def chat(self, messages, **params):  # noqa: ANN001, ANN003, ANN201
            self.priority = params.pop("priority")
            return await super().chat(messages, **params)

    msgs = [{"role": "user", "content": "x"}]
    inner = Seen()
    with Journal(tmp_path / "j.jsonl") as j:
        asyncio.run(RecordingClient(inner, j, "generate", "m", StageStats(), priority=-7).chat(msgs))
        stats = StageStats()
        asyncio.run(RecordingClient(inner, j, "generate", "m", stats, priority=3).chat(msgs))
    assert inner.priority == -7 and inner.calls == 1 and stats.replayed == 1  # same key whatever the priority
