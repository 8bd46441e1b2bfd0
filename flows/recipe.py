"""The recipe: a YAML run description (prompts, policy, sampling, judges, output), as pydantic models.

`load_recipe` turns every mistake into one line naming the file and the field path.
"""

from __future__ import annotations

import hashlib
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import (
    AliasChoices,
    BaseModel,
    ConfigDict,
    Field,
    ValidationError,
    field_validator,
    model_validator,
)

from judges.contract import JudgeConfig
from judges.registry import AnyJudgeConfig, CritiqueConfig, judge_class, pick, ranking_key
from serving.config_files import describe_error, field_error, load_model
from serving.endpoint import ClientConfig
from serving.errors import ConfigError
from serving.served import ServedModel, check_model_ref

_HINT = "recipes/demo.yaml shows every field"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class PromptSource(_Strict):
    path: str = Field(
        default="default", description="JSONL/Parquet/CSV/datasets dir; 'default' = bundled set"
    )
    column: str = Field(default="prompt", description="text column ('messages' and 'turns' work)")
    id_column: str | None = Field(default=None, description="id column; else sha256 of the text")
    split: str = Field(default="train", description="split when the source is a DatasetDict")
    limit: int | None = Field(default=None, ge=1, description="use only the first N prompts")
    max_prompt_chars: int = Field(default=8000, ge=1, description="longer prompts are skipped")


class Sampling(_Strict):
    n: int = Field(default=4, ge=1, le=64, description="completions per prompt")
    temperature: float = Field(default=0.8, ge=0)
    # 1.0 as in vLLM and the OpenAI API: below 1, vLLM's CPU sampler sorts the whole vocabulary each
    # decode step for every batch holding such a request (~90 ms for 32 rows of 49k on 2 cores)
    top_p: float = Field(default=1.0, gt=0, le=1)
    max_tokens: int = Field(default=128, ge=1)
    seed: int | None = Field(default=0, description="base seed; batch i uses seed + i")


class BinarizeSpec(_Strict):
    rule: Literal["best-vs-random-lower", "best-vs-worst", "all-pairs"] = "best-vs-random-lower"
    keep_ties: bool = False
    min_margin: float = Field(
        default=0.0,
        ge=0,
        description="judge pairs: score_chosen - score_rejected in "
        "the ranking judge's units (UltraFeedback 1-5: up to 4; pairwise win share: up to 1)",
    )
    constitution_min_margin: float = Field(
        default=0.0,
        ge=0,
        le=1,
        description="constitution pairs: 2 P(chosen) - 1 for labels (0-1); a kept revision's margin is 1",
    )
    test_fraction: float = Field(default=0.1, ge=0, lt=1)
    seed: int = 42
    score: str | None = Field(default=None, description="judge whose score ranks; first rating judge")


class LintSpec(_Strict):
    """Lints on the built dataset (flows/dataset/lints.py); every lint is counted in summary.json."""

    allow_truncated_chosen: bool = Field(
        default=False, description="a completion cut at max_tokens may be chosen (it may always be rejected)"
    )
    near_duplicate_threshold: float = Field(
        default=0.8, gt=0, le=0.98, description="MinHash-LSH Jaccard threshold, word 3-grams (<= 0.98)"
    )
    drop_duplicate_prompts: bool = Field(
        default=False, description="drop later exact/near-duplicate prompts (default: counted, kept)"
    )
    decontaminate_ngram: int = Field(default=13, ge=1, description="word n-gram length for decontaminate")


class BudgetSpec(_Strict):
    """`budget:` in a recipe: the most this run may send, in tokens (prompt + completion) or USD."""

    tokens: int | None = Field(default=None, ge=1, description="prompt + completion tokens sent by this run")
    usd: float | None = Field(default=None, gt=0, description="USD spent by this run (needs `price:`)")

    @model_validator(mode="after")
    def _one_limit(self) -> BudgetSpec:
        if self.tokens is None and self.usd is None:
            raise ValueError("name `tokens:` or `usd:` (or leave `budget:` out)")
        return self


class StopRules(_Strict):
    """`rounds.stop_when`: end `rlaif iterate` early, with one line saying why, after a round where any
    rule holds (checked on finished rounds too, so a re-run does not start another)."""

    win_rate_ci_low_below: float | None = Field(
        default=None, ge=0, le=1,
        description="the trained policy's win rate over the previous policy has its lower 95% bound below this",
    )  # fmt: skip
    length_growth_above: float | None = Field(
        default=None, gt=0,
        description="the trained policy's mean held-out answer length over the base policy's exceeds this ratio",
    )  # fmt: skip
    judge_accuracy_below: float | None = Field(
        default=None, ge=0, le=1, description="the round's judge gate measured an accuracy below this"
    )


class RoundsSpec(_Strict):
    """`rounds:` on-policy rounds: how many, which prompts each round gets, where the trained policy is
    served, and (for an external policy endpoint) the command that loads new weights there."""

    count: int = Field(default=2, ge=1, le=100, description="rounds `rlaif iterate` runs (--rounds)")
    prompts_per_round: int | None = Field(
        default=None, ge=1, description="fresh prompts per round; default: the pool after eval // count"
    )
    same_prompts: bool = Field(default=False, description="every round answers the same prompts")
    eval_prompts: int = Field(default=8, ge=1, description="held-out prompts for the win rates")
    eval_max_tokens: int = Field(default=96, ge=1, description="answer length on the held-out prompts")
    port: int = Field(default=8766, ge=1, le=65535, description="local server of the trained policies")
    seed: int = Field(default=0, description="seed of the prompt split")
    reload_command: str | None = Field(
        default=None,
        description="external policy only: a command run before each round >= 2 that makes the endpoint "
        "serve the new weights; {model} = the trained folder, {name} = its name@hash",
    )
    stop_when: StopRules = Field(default_factory=StopRules, description="rules that end the rounds early")


DECONTAMINATE_FORMATS = (".jsonl", ".json", ".parquet", ".csv")


def check_eval_files(paths: list[str]) -> list[str]:
    """Every `decontaminate` entry is an existing JSONL/Parquet/CSV file or `datasets` folder."""
    for k, p in enumerate(paths):
        path = Path(p).expanduser()
        if not path.exists():
            raise field_error((k,), f"{p}: no such file or folder", p)
        if path.is_file() and path.suffix.lower() not in DECONTAMINATE_FORMATS:
            raise field_error((k,), f"{p}: not JSONL, Parquet or CSV", p)
    return paths


class GateSpec(_Strict):
    """`gate:` run the judge on labelled pairs before any generation; below a threshold the run stops
    (exit 3; `rlaif run --no-gate` overrides). No thresholds = informational: figures only."""

    pairs: str = Field(description="JSONL of labelled pairs: prompt, chosen, rejected (+ tie, category)")
    judge: str | None = Field(default=None, description="a judge's name/type; default: the ranking judge")
    min_accuracy: float | None = Field(default=None, ge=0, le=1)
    min_margin_over_length: float | None = Field(default=None, ge=-1, le=1,
                                                 description="accuracy minus the length-only baseline")  # fmt: skip
    min_consistency: float | None = Field(default=None, ge=0, le=1, description="both orders agree")
    limit: int | None = Field(default=None, ge=1, description="use only the first N pairs")

    def thresholds(self) -> dict[str, float]:
        """figure name in `JudgeEval` -> minimum."""
        pairs = {"accuracy": self.min_accuracy, "margin_over_length": self.min_margin_over_length,
                 "consistency": self.min_consistency}  # fmt: skip
        return {k: v for k, v in pairs.items() if v is not None}


LORA_TRAINER_FIELDS = ("lora", "lora_r", "lora_alpha", "lora_dropout", "lora_target_modules", "lora_adapter",
                       "save_adapter")  # fmt: skip


class LoraSpec(_Strict):
    """`train.lora:` train a LoRA adapter (peft) instead of all weights. The adapter is saved on its own
    (rounds serve it on the policy's running vLLM, loaded at runtime) unless `merge: true`."""

    r: int = Field(default=16, ge=1, le=512, description="rank")
    alpha: int | None = Field(default=None, ge=1, description="scaling alpha; default 2 x r")
    target_modules: list[str] | Literal["all-linear"] = Field(
        default="all-linear", description="module names (q_proj, v_proj, ...) or all-linear"
    )
    dropout: float = Field(default=0.0, ge=0, lt=1)
    merge: bool = Field(
        default=False, description="save the merged model (a full folder: rounds then serve it as one)"
    )
    start_from: str | None = Field(
        default=None, description="an adapter folder to train on (rounds: the previous round's adapter)"
    )

    def trainer_fields(self) -> dict[str, object]:
        """The trainer config's flat LoRA fields (trainers/configs.py)."""
        modules = (
            self.target_modules if isinstance(self.target_modules, str) else ",".join(self.target_modules)
        )
        return {"lora": True, "lora_r": self.r, "lora_alpha": self.alpha, "lora_dropout": self.dropout,
                "lora_target_modules": modules, "save_adapter": not self.merge,
                "lora_adapter": self.start_from}  # fmt: skip


class TrainSpec(_Strict):
    """`train:` the method and any field of its trainer config (trainers/configs.py, the one place they are
    declared); a field left out keeps the trainer's own default, an unknown one is refused. PPO without a
    `reward_model` first trains one on the run's own pairs (`reward_training:` its reward-trainer fields)."""

    model_config = ConfigDict(extra="allow")

    method: Literal["sft", "dpo", "reward", "ppo"] = "dpo"
    model: str | None = Field(default=None, description="defaults to the policy model")
    reward_model: str | None = Field(default=None, description="ppo: folder from `rlaif train reward`; "
                                     "default: one trained on the run's pairs first")  # fmt: skip
    lora: LoraSpec | None = Field(default=None, description="train a LoRA adapter: {r, alpha, target_modules, "
                                  "dropout, merge}; `true` takes the defaults")  # fmt: skip
    reward_training: dict[str, Any] | None = Field(
        default=None, description="ppo without reward_model: fields of the reward trainer (max_steps, ...)"
    )

    _models_exist = field_validator("model", "reward_model")(check_model_ref)

    @field_validator("lora", mode="before")
    @classmethod
    def _lora_flag(cls, v: object) -> object:
        return ({} if v else None) if isinstance(v, bool) else v

    @model_validator(mode="after")
    def _trainer_fields(self) -> TrainSpec:
        from trainers.configs import METHOD_CONFIGS, method_fields

        allowed = method_fields(self.method)
        for name in self.model_extra or {}:
            if name in LORA_TRAINER_FIELDS:
                raise field_error(
                    (name,), "set LoRA under `lora:` (r, alpha, target_modules, dropout, merge)", name
                )
            if name not in allowed:
                raise field_error((name,), f"unknown field for method {self.method}; fields: "
                                  f"{', '.join(sorted(allowed))}", name)  # fmt: skip
        try:
            METHOD_CONFIGS[self.method].model_validate({**self.fields(), "dataset": "-", "output": "-"})
        except ValidationError as exc:
            err = exc.errors()[0]
            raise field_error(tuple(err["loc"]), err["msg"], err.get("input")) from None
        if self.method == "reward" and self.serves_adapter:
            raise field_error(
                ("lora", "merge"), "a reward model is saved whole: set `lora.merge: true`", False
            )
        if self.reward_training is not None:
            if self.method != "ppo" or self.reward_model:
                raise field_error(("reward_training",), "only for method ppo without a reward_model (the "
                                  "reward model trained on the run's pairs)")  # fmt: skip
            extra = sorted(set(self.reward_training) - set(method_fields("reward")))
            if extra:
                raise field_error(("reward_training", extra[0]), "unknown field of the reward trainer; fields: "
                                  f"{', '.join(sorted(method_fields('reward')))}")  # fmt: skip
            try:
                METHOD_CONFIGS["reward"].model_validate(
                    {**self.reward_training, "dataset": "-", "output": "-"}
                )
            except ValidationError as exc:
                err = exc.errors()[0]
                raise field_error(("reward_training", *err["loc"]), err["msg"], err.get("input")) from None
        return self

    @property
    def serves_adapter(self) -> bool:
        """It trains a LoRA adapter kept apart from the model (rounds serve it on the base model's server)."""
        return self.lora is not None and not self.lora.merge

    def fields(self) -> dict[str, object]:
        """What goes to the trainer's config (the method's own fields only)."""
        out = dict(self.model_extra or {})
        out.update(self.lora.trainer_fields() if self.lora else {})
        out.update(
            {k: v for k, v in (("model", self.model), ("reward_model", self.reward_model)) if v is not None}
        )
        return out


EXECUTION_FIELDS = {
    "budget",
    "gate",
    "task_runner",
    "dask_address",
    "dask_workers",
    "shards_in_flight",
    "prompts_in_flight",
    "shard_size",
    "client",
    "output",
}


class Recipe(_Strict):
    model_config = ConfigDict(extra="forbid", populate_by_name=True)

    name: str = "run"
    prompts: PromptSource = Field(default_factory=PromptSource)
    policy: ServedModel = Field(default_factory=ServedModel)
    sampling: Sampling = Field(default_factory=Sampling)
    shard_size: int = Field(
        default=256,
        ge=1,
        validation_alias=AliasChoices("shard_size", "batch_size"),
        description="prompts per shard: one Prefect task and one journal each",
    )
    shards_in_flight: int = Field(default=2, ge=1, description="shards processed at once (per process)")
    prompts_in_flight: int | None = Field(
        default=None, ge=1, description="per shard; default from concurrency"
    )
    output: str = Field(default="runs/{name}", description="run folder; {name} and {date} expand")
    client: ClientConfig = Field(default_factory=ClientConfig)
    task_runner: Literal["threads", "dask"] = "threads"
    dask_address: str | None = Field(default=None, description="scheduler address; else a local cluster")
    dask_workers: int = Field(default=2, ge=1, description="worker processes of the local Dask cluster")
    judges: list[AnyJudgeConfig] = Field(default_factory=list)
    binarize: BinarizeSpec = Field(default_factory=BinarizeSpec)
    critique: CritiqueConfig = Field(
        default=None, description="constitution critique -> revision and/or labels (a constitution judge)"
    )
    train: TrainSpec | None = None
    budget: BudgetSpec | None = Field(default=None, description="stop this run at N tokens or USD")
    gate: GateSpec | None = None
    rounds: RoundsSpec | None = Field(default=None, description="on-policy rounds for `rlaif iterate`")
    lints: LintSpec = Field(default_factory=LintSpec)
    decontaminate: list[str] = Field(
        default_factory=list, description="eval prompt files; overlapping prompts are dropped from outputs"
    )

    _eval_files_exist = field_validator("decontaminate")(check_eval_files)

    @model_validator(mode="after")
    def _names_exist(self) -> Recipe:
        keys = [j.key for j in self.feedback()]
        dup = {k for k in keys if keys.count(k) > 1}
        if dup:
            raise field_error(
                ("judges",), f"judge names must be unique; repeated: {sorted(dup)} (set `name:`)"
            )
        if self.binarize.score is not None and self.binarize.score not in keys:
            raise field_error(("binarize", "score"), f"{self.binarize.score!r} names no judge; "
                              f"choose from {keys} (a judge's `name:`, else its type)")  # fmt: skip
        if (
            self.budget is not None
            and self.budget.usd is not None
            and not any(m.price for m in self.served())
        ):
            raise field_error(("budget", "usd"), "a money budget needs `price:` on the policy or a judge "
                              "endpoint (USD per 1M tokens: {input, output}); or use `budget.tokens`")  # fmt: skip
        if self.rounds is not None:
            self._check_rounds(self.rounds)
        if self.train is not None and self.train.model is None and not self.policy.is_local:
            raise field_error(("train", "model"), "the policy is an external endpoint, so name the local "
                              "model folder to train (its weights are not on this machine)")  # fmt: skip
        return self

    def _check_rounds(self, rounds: RoundsSpec) -> None:
        if not self.policy.is_local and not rounds.reload_command:
            raise field_error(("rounds", "reload_command"), "the policy is an external endpoint: round 2 "
                              "must serve round 1's model there, so give the command that loads it "
                              "({model} = the trained folder), or serve the policy locally")  # fmt: skip
        if self.policy.is_local and rounds.port in {m.port for m in self.served() if m.is_local}:
            raise field_error(("rounds", "port"), f"port {rounds.port} is taken by the policy or a judge; "
                              "the trained policies need a port of their own")  # fmt: skip
        if self.train is not None and self.train.method not in ("dpo", "sft", "ppo"):
            raise field_error(("train", "method"), f"rounds train a policy with dpo, sft or ppo (a reward "
                              f"model on the round's pairs, then PPO), not {self.train.method}")  # fmt: skip
        if self.train is not None and self.train.serves_adapter:
            if not self.policy.is_local:
                raise field_error(("train", "lora"), "adapter rounds serve the adapter on the policy's own "
                                  "vLLM; with an external policy set `lora.merge: true` (reload_command "
                                  "then loads the merged folder)")  # fmt: skip
            if self.train.model is not None and self.train.model != self.policy.model:
                raise field_error(("train", "model"), "adapter rounds serve each adapter on the policy's "
                                  "server, so they train the policy's own model (leave train.model out)")  # fmt: skip

    def feedback(self) -> list[JudgeConfig]:
        """Every judge of the run: `judges:` then the `critique:` section (a constitution judge)."""
        return [*self.judges, *([self.critique] if self.critique is not None else [])]

    def judge_endpoint(self, spec: ServedModel | None) -> ServedModel:
        return spec or self.policy

    def ranking_key(self) -> str | None:
        """The judge whose scores rank completions (`binarize.score`, else the default choice)."""
        return ranking_key(self.feedback(), self.binarize.score)

    def gate_judge(self) -> JudgeConfig | None:
        """The judge the gate checks: `gate.judge`, else the ranking judge."""
        if self.gate is None or not self.feedback():
            return None
        return pick(self.feedback(), self.gate.judge or self.ranking_key())

    def served_by_stage(self) -> dict[str, ServedModel]:
        """Every model the run talks to, by the stage it serves ("generate", a judge's stage)."""
        out = {"generate": self.policy}
        for c in self.feedback():
            out[judge_class(c.type).stage_of(c)] = self.judge_endpoint(c.judge)
        return out

    def served(self) -> list[ServedModel]:
        """Every model the run talks to: the policy, then each judge's endpoint."""
        return list(self.served_by_stage().values())

    def sha256(self) -> str:
        """Hash of what shapes the data; how it is executed (runner, shard sizes, client) is left out,
        so the same data made on threads or on Dask carries the same provenance."""
        return hashlib.sha256(self.model_dump_json(exclude=EXECUTION_FIELDS).encode()).hexdigest()

    def output_dir(self, date: str | None = None) -> Path:
        import datetime as dt

        date = date or dt.datetime.now().strftime("%Y-%m-%d")
        return Path(self.output.format(name=self.name, date=date)).expanduser()


def parse_recipe(data: object, source: str = "<recipe>") -> Recipe:
    """Validate an already-parsed recipe mapping (e.g. from a deployment parameter)."""
    if data is None:
        data = {}
    if not isinstance(data, dict):
        raise ConfigError(f"{source}: a recipe must be a YAML mapping, got {type(data).__name__}")
    try:
        return Recipe.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(describe_error(source, yaml.safe_dump(data), exc, _HINT)) from None


def load_recipe(path: str | Path) -> Recipe:
    """Read and validate a recipe YAML file (`yaml.safe_load` only)."""
    return load_model(path, Recipe, "recipe", _HINT)[0]


def load_run(
    path: str | Path, limit: int | None = None, out: str | Path | None = None
) -> tuple[Recipe, Path]:
    """The one way a command or a flow loads a recipe: validated, with `limit` (use the first N prompts)
    applied, and the output folder (`out` wins over the recipe's `output`)."""
    recipe = load_recipe(path)
    if limit is not None:
        if limit < 1:
            raise ConfigError(f"--limit must be >= 1, got {limit}")
        recipe.prompts.limit = limit
    return recipe, Path(out) if out else recipe.output_dir()
