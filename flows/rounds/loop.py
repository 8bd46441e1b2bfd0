"""`rlaif iterate`: round k serves the policy round k-1 trained, generates on its own prompts, judges,
builds and trains into `OUT/round-k/`, then measures the new policy against the base and the previous
one on held-out prompts. A round with `round.json` is finished and never redone; an unfinished one
resumes per request (each round is an ordinary resumable `rlaif run`). LoRA rounds serve each adapter
on the recipe's own policy server (started once with LoRA enabled, adapters loaded at runtime)."""

from __future__ import annotations

import hashlib
import json
import shlex
import subprocess
import time
from contextlib import ExitStack
from pathlib import Path

from pydantic import BaseModel, Field

from flows.dataset.atomic_files import atomic_write_text, check_writable
from flows.dataset.gate_result import GateResult
from flows.dataset.prompts import PromptRow, load_prompts
from flows.dataset.schema import UF_DIR
from flows.evals.win_rate import WinRate, policy_answers, win_rate
from flows.recipe import Recipe, RoundsSpec, StopRules, TrainSpec
from serving.endpoint import Endpoint
from serving.errors import ConfigError, ModelError, RlaifError
from serving.lora import (
    LoraServing,
    adapter_config,
    adapter_sha256,
    is_adapter_dir,
    load_adapter,
    unload_adapter,
)
from serving.models import resolve_model, weights_sha256
from serving.served import ServedModel
from serving.vllm import VllmServer

MAX_ADAPTERS = 2  # adapters kept loaded on the policy server: the policy being served and the one trained


class Policy(BaseModel):
    """A policy of the iteration: where its weights are, their hash and the name it is served under."""

    model: str = Field(description="its model folder, or with `adapter` its LoRA adapter folder")
    sha256: str
    served_as: str
    round: int  # 0: the recipe's own policy
    adapter: bool = Field(default=False, description="a LoRA adapter served on the recipe's policy server")

    def current_sha256(self) -> str:
        """The hash of what is in its folder now (weights_sha256, or adapter_sha256 for an adapter)."""
        return adapter_sha256(self.model) if self.adapter else weights_sha256(self.model)


class RoundTiming(BaseModel):
    """Where a round's wall time went, in seconds. `overhead_s` is what is left outside requests and
    training: policy server starts and switches, adapter loads, flow, gate and evaluation set-up, build."""

    wall_s: float
    generate_s: float = Field(description="the round's shard engine: generation and judging, streamed")
    train_s: float
    eval_requests_s: float = Field(description="held-out answers and their judging (serving excluded)")
    serve_s: float = Field(description="policy server starts and switches, adapter loads")
    overhead_s: float
    server_starts: int = Field(description="vLLM servers this round started")
    adapter_loads: int = Field(description="LoRA adapters this round loaded into a running server")


class RoundResult(BaseModel):
    """OUT/round-k/round.json: written last, so its presence means the round is finished."""

    round: int
    parent: int | None = Field(description="the round whose model generated this round's data")
    policy: Policy = Field(description="the model that generated this round's completions")
    trained: Policy = Field(description="the model this round trained")
    prompts: int
    pairs: int
    vs_base: WinRate
    vs_previous: WinRate
    mean_len: float = Field(description="mean answer length (characters) of `trained` on held-out prompts")
    reward_margin: float | None = Field(default=None, description="DPO eval rewards/margins after training")
    out_dir: str
    gate: GateResult | None = Field(default=None, description="the judge re-checked on the recipe's pairs")
    base_mean_len: float | None = Field(default=None, description="the base policy's held-out answer length")
    completion_len: float | None = Field(default=None, description="mean length of the round's completions")
    longer_chosen_share: float | None = Field(default=None, description="pairs whose chosen answer is longer")
    stopped: str | None = Field(default=None, description="why the rounds ended after this one (stop_when)")
    method: str | None = Field(default=None, description="how `trained` was trained (dpo, sft, ppo)")
    reward_accuracy: float | None = Field(default=None, description="ppo: its reward model's test accuracy")
    timing: RoundTiming | None = None

    def length_growth(self) -> float | None:
        """Held-out answer length of the trained policy over the base policy's (length creep)."""
        return self.mean_len / self.base_mean_len if self.base_mean_len else None


def stop_reason(rules: StopRules, r: RoundResult) -> str | None:
    """The first `stop_when` rule that holds after round `r`, said in one line; None to go on."""
    w = r.vs_previous
    if rules.win_rate_ci_low_below is not None and w.ci_low < rules.win_rate_ci_low_below:
        return (f"the win rate over the previous policy is {w.cell()}: its lower bound {w.ci_low:.2f} < "
                f"stop_when.win_rate_ci_low_below {rules.win_rate_ci_low_below}")  # fmt: skip
    growth = r.length_growth()
    if rules.length_growth_above is not None and growth is not None and growth > rules.length_growth_above:
        return (f"answers grew to {growth:.2f}x the base policy's length ({r.mean_len:.0f} vs "
                f"{r.base_mean_len:.0f} chars) > stop_when.length_growth_above {rules.length_growth_above}")  # fmt: skip
    acc = r.gate.figures.get("accuracy") if r.gate else None
    if (
        rules.judge_accuracy_below is not None
        and isinstance(acc, (int, float))
        and acc < rules.judge_accuracy_below
    ):
        return f"the judge's accuracy on the gate pairs is {acc:.2f} < stop_when.judge_accuracy_below {rules.judge_accuracy_below}"
    return None


def round_dir(out: Path, k: int) -> Path:
    return out / f"round-{k}"


def finished_round(out: Path, k: int) -> RoundResult | None:
    """Round k's result when it finished, after checking its model is still readable."""
    path = round_dir(out, k) / "round.json"
    if not path.is_file():
        return None
    res = RoundResult.model_validate_json(path.read_text())
    try:
        sha = res.trained.current_sha256()
    except (OSError, ModelError) as exc:
        raise ConfigError(f"{path}: round {k}'s model {res.trained.model} cannot be read ({exc}); restore "
                          f"it, or delete {round_dir(out, k)} to train round {k} again") from None  # fmt: skip
    if sha != res.trained.sha256:
        raise ConfigError(f"{path}: round {k}'s model {res.trained.model} changed since it was trained "
                          f"(sha256 {sha[:12]} != {res.trained.sha256[:12]}); delete {round_dir(out, k)} "
                          "to train it again")  # fmt: skip
    return res


def split_prompts(recipe: Recipe, rounds: RoundsSpec, count: int, recipe_dir: Path | None
                  ) -> tuple[list[PromptRow], list[list[PromptRow]]]:  # fmt: skip
    """(held-out eval prompts, prompts of each round): a seeded order of the pool, eval first, then
    disjoint slices (or one slice for all rounds with `same_prompts`)."""
    src = recipe.prompts
    pool = load_prompts(src.path, src.column, src.id_column, src.split, src.limit, src.max_prompt_chars,
                        recipe_dir).rows  # fmt: skip
    pool.sort(key=lambda r: hashlib.sha256(f"{rounds.seed}:{r.prompt_id}".encode()).hexdigest())
    held, rest = pool[: rounds.eval_prompts], pool[rounds.eval_prompts :]
    slices = 1 if rounds.same_prompts else count
    per = rounds.prompts_per_round or len(rest) // slices
    if per < 1 or per * slices > len(rest):
        raise ConfigError(f"rounds: {len(pool)} prompts from {src.path} cannot give {rounds.eval_prompts} "
                          f"held-out prompts plus {slices} x {max(per, 1)} for the rounds; lower "
                          "rounds.prompts_per_round / rounds.eval_prompts, or add prompts")  # fmt: skip
    return held, [rest[(0 if rounds.same_prompts else k) * per :][:per] for k in range(count)]


def write_prompts(path: Path, rows: list[PromptRow]) -> Path:
    """A round's prompts as JSONL (ids kept), written once: the round's `rlaif run` reads them by path."""
    text = "".join(json.dumps({"id": r.prompt_id, "messages": r.messages}) + "\n" for r in rows)
    if not path.is_file() or path.read_text() != text:
        atomic_write_text(path, text)
    return path


def base_policy(recipe: Recipe) -> Policy:
    model = recipe.policy.model
    local = recipe.policy.is_local
    sha = weights_sha256(resolve_model(model)) if local else hashlib.sha256(model.encode()).hexdigest()
    return Policy(model=model, sha256=sha, served_as=recipe.policy.display_name(), round=0)


def served(recipe: Recipe, policy: Policy) -> ServedModel:
    """How round k's generation reaches `policy`: the recipe's policy for round 0's model; an adapter by
    its name on the recipe's policy server; a trained model on the rounds' own local port, or the
    recipe's external endpoint after its reload command."""
    if policy.round == 0:
        return recipe.policy
    if policy.adapter:  # an endpoint of the running base server: the engine starts nothing for it
        base = recipe.policy
        ep = Endpoint(base_url=f"http://127.0.0.1:{base.port}/v1", model=policy.served_as,
                      max_concurrency=base.max_concurrency)  # fmt: skip
        return base.model_copy(update={"endpoints": [ep], "served_as": policy.served_as, "price": None})
    if not recipe.policy.is_local:
        return recipe.policy
    assert recipe.rounds is not None
    return recipe.policy.model_copy(
        update={
            "model": policy.model,
            "port": recipe.rounds.port,
            "served_as": policy.served_as,
            "price": None,
        }
    )


def round_recipe(recipe: Recipe, k: int, policy: Policy, prompts: Path, out: Path) -> Recipe:
    """Round k's recipe: its policy and prompts; judges and critique pinned to the recipe's judge
    endpoints (a judge left to "the policy" must not become the model being trained)."""
    judge_of = recipe.policy
    judges = [j.model_copy(update={"judge": j.judge or judge_of}) for j in recipe.judges]
    crit = recipe.critique
    if crit is not None:
        crit = crit.model_copy(update={"judge": crit.judge or judge_of})
    train = recipe.train or TrainSpec(method="dpo")
    if train.serves_adapter:  # the base model, training on from the previous round's adapter
        train_model = train.model or recipe.policy.model
        lora = train.lora.model_copy(update={"start_from": policy.model if policy.adapter else None})
        train = train.model_copy(update={"lora": lora})
    else:
        train_model = policy.model if policy.round else (train.model or recipe.policy.model)
    prompt_src = recipe.prompts.model_copy(update={"path": str(prompts), "column": "messages",
                                                   "id_column": "id", "limit": None, "split": "train"})  # fmt: skip
    return recipe.model_copy(update={
        "name": f"{recipe.name}-round-{k}", "policy": served(recipe, policy), "prompts": prompt_src,
        "judges": judges, "critique": crit, "train": train.model_copy(update={"model": train_model}),
        "output": str(out), "gate": recipe.gate, "rounds": None,
    })  # fmt: skip


def carry_gate(out: Path, k: int) -> None:
    """Round k re-checks the judge with the recipe's gate; when round k-1 measured the same gate (judge,
    endpoint model, pairs: its key), its figures are reused instead of asked again."""
    prev, mine = round_dir(out, k - 1) / "gate.json", round_dir(out, k) / "gate.json"
    if k > 1 and prev.is_file() and not mine.exists():
        mine.parent.mkdir(parents=True, exist_ok=True)
        atomic_write_text(mine, prev.read_text())


def completion_length(rdir: Path) -> float | None:
    """Mean characters of the round's completions (all of them, read from its UltraFeedback Parquet)."""
    import pyarrow.compute as pc
    import pyarrow.parquet as pq

    path = rdir / "parquet" / UF_DIR / "train.parquet"
    if not path.is_file():
        return None
    comps = pc.list_flatten(pq.read_table(path, columns=["completions"]).column("completions"))
    lens = pc.utf8_length(pc.struct_field(comps, "response"))
    return None if len(lens) == 0 else float(pc.mean(lens).as_py())


def reload_external(rounds: RoundsSpec, policy: Policy) -> None:
    """Run the recipe's reload command so the external endpoint serves `policy` (one line on failure)."""
    assert rounds.reload_command is not None
    cmd = rounds.reload_command.format(model=shlex.quote(policy.model), name=shlex.quote(policy.served_as))
    proc = subprocess.run(cmd, shell=True, capture_output=True, text=True)  # the user's own command
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-1:] or ["no output"]
        raise RlaifError(f"rounds.reload_command exited {proc.returncode}: {tail[0][:200]}")


def trained_policy(res_train: dict, k: int) -> Policy:
    path = str(Path(res_train["output"]).resolve())
    adapter = is_adapter_dir(path)
    sha = adapter_sha256(path) if adapter else weights_sha256(path)
    return Policy(model=path, sha256=sha, served_as=f"round-{k}@{sha[:12]}", round=k, adapter=adapter)


def lora_serving(recipe: Recipe, done: list[RoundResult]) -> LoraServing | None:
    """How the recipe's policy server takes the rounds' adapters; None for full-model rounds."""
    train = recipe.train
    if train is None or train.lora is None or not train.serves_adapter:
        if done and done[-1].trained.adapter:
            raise ConfigError(f"round {done[-1].round} trained a LoRA adapter ({done[-1].trained.model}) but the "
                              "recipe's train: now trains whole models; put `lora:` back, or start in a new --out")  # fmt: skip
        return None
    ranks = [int(adapter_config(r.trained.model).get("r", 0)) for r in done if r.trained.adapter]
    return LoraServing(max_rank=max([train.lora.r, *ranks]), max_loras=MAX_ADAPTERS)


def policy_base_server(recipe: Recipe, lora: LoraServing) -> VllmServer:
    """The recipe's policy server, started (or reused) ready to take adapters at runtime; the run's own
    `live_endpoints` then reuses it for the base policy and the judges pinned to it."""
    spec = recipe.policy
    return VllmServer(spec.model, port=spec.port, max_model_len=spec.max_model_len, name=spec.served_as,
                      extra_args=["--trust-remote-code"] if spec.trust_remote_code else None, lora=lora)  # fmt: skip


class PolicyServer:
    """The one local server of the rounds' trained policies (`rounds.port`): switched from one policy to
    the next, so each trained policy is started once, for its evaluation, and left up for the next
    round's generation (which reuses it); an external policy gets the reload command instead. An adapter
    is loaded into the recipe's policy server (the last `MAX_ADAPTERS` stay loaded). `serve_s` and
    `adapter_loads` count what serving cost."""

    def __init__(self, recipe: Recipe) -> None:
        self.recipe = recipe
        self.current: VllmServer | None = None
        self.loaded: list[str] = []  # adapters this run loaded, oldest first
        self.serve_s = 0.0
        self.adapter_loads = 0

    def serve(self, policy: Policy) -> None:
        t0 = time.monotonic()
        try:
            self._serve(policy)
        finally:
            self.serve_s += time.monotonic() - t0

    def _serve(self, policy: Policy) -> None:
        rounds = self.recipe.rounds or RoundsSpec()
        if policy.round == 0:
            return
        if policy.adapter:
            self._load(policy)
            return
        if not self.recipe.policy.is_local:
            reload_external(rounds, policy)
            return
        if self.current is not None and self.current.model_name == policy.served_as:
            return
        self.stop()
        spec = served(self.recipe, policy)
        self.current = VllmServer(policy.model, port=spec.port, name=policy.served_as,
                                  max_model_len=spec.max_model_len).start()  # fmt: skip

    def _load(self, policy: Policy) -> None:
        url = f"http://127.0.0.1:{self.recipe.policy.port}/v1"
        if load_adapter(url, policy.served_as, policy.model):
            self.adapter_loads += 1
        if policy.served_as in self.loaded:
            self.loaded.remove(policy.served_as)
        self.loaded.append(policy.served_as)
        while len(self.loaded) > MAX_ADAPTERS:
            unload_adapter(url, self.loaded.pop(0))

    def stop(self) -> None:
        if self.current is not None:
            self.current.stop()
            self.current = None


class RoundClock:
    """The counters at a round's start; `timing` reads the round's `RoundTiming` against them."""

    def __init__(self, policies: PolicyServer) -> None:
        self.policies = policies
        self.t0, self.starts = time.monotonic(), VllmServer.starts
        self.serve_s, self.loads = policies.serve_s, policies.adapter_loads

    def timing(self, engine: dict, train: dict, eval_s: float) -> RoundTiming:
        wall = time.monotonic() - self.t0
        gen_s, train_s = float(engine.get("engine_s") or 0.0), float(train.get("train_s") or 0.0)
        return RoundTiming(
            wall_s=round(wall, 2), generate_s=round(gen_s, 2), train_s=round(train_s, 2),
            eval_requests_s=round(eval_s, 2), serve_s=round(self.policies.serve_s - self.serve_s, 2),
            overhead_s=round(wall - gen_s - train_s - eval_s, 2), server_starts=VllmServer.starts - self.starts,
            adapter_loads=self.policies.adapter_loads - self.loads,
        )  # fmt: skip


def evaluate(recipe: Recipe, held: list[PromptRow], trio: tuple[Policy, Policy, Policy], policies: PolicyServer,
             out: Path) -> tuple[dict[str, list[str]], WinRate, WinRate, float]:  # fmt: skip
    """Held-out answers of (base, previous, trained), each policy once, and the trained policy's win rates
    over the base and the previous one; with the seconds spent on these requests (serving excluded)."""
    rounds = recipe.rounds or RoundsSpec()
    base, previous, trained = trio
    t0, serve0 = time.monotonic(), policies.serve_s
    answers: dict[str, list[str]] = {}
    for p in trio:  # the policy being served is answered before switching
        if p.sha256 not in answers:
            answers[p.sha256] = policy_answers(served(recipe, p), p, held, rounds.eval_max_tokens, out / "eval",
                                               recipe.client, policies.serve)  # fmt: skip
    vs_base = win_rate(recipe, held, answers[trained.sha256], answers[base.sha256])
    vs_prev = win_rate(recipe, held, answers[trained.sha256], answers[previous.sha256])
    return answers, vs_base, vs_prev, time.monotonic() - t0 - (policies.serve_s - serve0)


def iterate(recipe: Recipe, out: Path, count: int | None = None, recipe_dir: Path | None = None,
            next_only: bool = False, no_gate: bool = False) -> list[RoundResult]:  # fmt: skip
    """Run rounds 1..count (finished ones are read back); `next_only`: at most one new round (a
    scheduled deployment runs one round per night)."""
    from flows.engine.live_endpoints import live_endpoints
    from flows.pipeline import run_pipeline
    from flows.rounds.report import append_card, write_report

    rounds = recipe.rounds or RoundsSpec()
    recipe = recipe.model_copy(update={"rounds": rounds})
    count = count or rounds.count
    check_writable(out)
    done: list[RoundResult] = []
    for k in range(1, count + 1):  # every finished round is checked before any request
        res = finished_round(out, k)
        if res is None:
            break
        done.append(res)
    if done and (
        why := stop_reason(rounds.stop_when, done[-1])
    ):  # the round that stopped, or a rule added since
        done[-1] = done[-1].model_copy(update={"stopped": why})
        write_report(out, done)
        return done
    if len(done) == count:
        write_report(out, done)
        return done
    held, slices = split_prompts(recipe, rounds, count, recipe_dir)
    write_prompts(out / "eval-prompts.jsonl", held)
    base = base_policy(recipe)
    lora = lora_serving(recipe, done)
    policies = PolicyServer(recipe)
    with ExitStack() as stack:
        if lora is not None:  # LoRA rounds: the recipe's policy server takes every round's adapter
            stack.enter_context(policy_base_server(recipe, lora))
        # the recipe's own servers (policy = base, judges) stay up for every round and every evaluation
        stack.enter_context(live_endpoints(*recipe.served()))
        stack.callback(policies.stop)
        policy = done[-1].trained if done else base
        for k in range(len(done) + 1, count + 1):
            clock = RoundClock(policies)
            rdir = round_dir(out, k)
            prompts = write_prompts(rdir / "prompts.jsonl", slices[k - 1])
            carry_gate(out, k)
            if policy.adapter or not recipe.policy.is_local:  # a local full model: the run starts it
                policies.serve(policy)  # its adapter, or the reload command
            summary = run_pipeline(round_recipe(recipe, k, policy, prompts, rdir), rdir, recipe_dir,
                                   no_gate=no_gate)  # fmt: skip
            if not summary.train:
                raise RlaifError(f"round {k}: the run trained no model ({rdir}); see its summary.json")
            trained = trained_policy(summary.train, k)
            answers, vs_base, vs_prev, eval_s = evaluate(recipe, held, (base, policy, trained), policies, out)
            pairs = summary.build.pairs if summary.build else {}
            res = RoundResult(
                round=k, parent=k - 1 if k > 1 else None, policy=policy, trained=trained,
                prompts=len(slices[k - 1]), pairs=pairs.get("train_prefs", 0) + pairs.get("test_prefs", 0),
                vs_base=vs_base, vs_previous=vs_prev,
                mean_len=sum(map(len, answers[trained.sha256])) / max(1, len(held)),
                reward_margin=summary.train.get("eval_rewards_margin"), out_dir=str(rdir), gate=summary.gate,
                base_mean_len=sum(map(len, answers[base.sha256])) / max(1, len(held)),
                completion_len=completion_length(rdir),
                longer_chosen_share=summary.build.lints.longer_chosen_share if summary.build else None,
                method=summary.train.get("method"), reward_accuracy=summary.train.get("reward_test_accuracy"),
                timing=clock.timing(summary.engine, summary.train, eval_s),
            )  # fmt: skip
            res.stopped = stop_reason(rounds.stop_when, res)
            append_card(rdir, res)
            atomic_write_text(rdir / "round.json", res.model_dump_json(indent=2) + "\n")
            done.append(res)
            policy = trained
            if next_only or res.stopped:
                break
    write_report(out, done)
    return done
