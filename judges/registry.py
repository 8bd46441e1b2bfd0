"""Judge types by name, and the choices made about judges (which one ranks, which one a name means).
Adding a judge type = one file in judges/ plus one line in `BUILTIN` (or `register(MyJudge)` from
your own code)."""

from __future__ import annotations

import importlib
from typing import Annotated, Any

from pydantic import BeforeValidator, SerializeAsAny

from judges.contract import Judge, JudgeConfig
from serving.config_files import field_error

BUILTIN = [  # module:class, one line per judge type
    "judges.ultrafeedback:UltraFeedbackJudge",
    "judges.pairwise:PairwiseJudge",
    "judges.reward_model:RewardModelJudge",
    "judges.constitution_judge:ConstitutionJudge",
    "judges.verifier:VerifierJudge",
]
CRITIQUE_TYPE = "constitution"  # a recipe's `critique:` section is a judge of this type
EVAL_DEFAULT_TYPE = "pairwise"  # `rlaif judge-eval` and eval-policy without a judge named
_REGISTRY: dict[str, type[Judge]] = {}


def register(cls: type[Judge]) -> type[Judge]:
    """Make a judge type usable in recipes (`judges: - type: <cls.type>`); usable as a decorator."""
    _REGISTRY[cls.type] = cls
    return cls


for _ref in BUILTIN:
    _module, _, _name = _ref.partition(":")
    register(getattr(importlib.import_module(_module), _name))


def kinds() -> list[str]:
    return list(_REGISTRY)


def judge_class(kind: str) -> type[Judge]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown judge type {kind!r}; choose from {kinds()}") from None


def make_judge(config: JudgeConfig, client: Any = None, allow_truncated_chosen: bool = False) -> Judge:
    return judge_class(config.type)(config, client, allow_truncated_chosen)


def parse_judge_config(value: Any) -> JudgeConfig:
    """A recipe's judge entry -> its type's own config (errors keep the field path)."""
    if isinstance(value, JudgeConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("a judge entry is a mapping with a `type:`")
    kind = value.get("type", "ultrafeedback")
    if kind not in _REGISTRY:
        raise field_error(("type",), f"unknown judge type {kind!r}; choose from {', '.join(kinds())}", kind)
    return _REGISTRY[kind].config_class.model_validate({**value, "type": kind})


AnyJudgeConfig = Annotated[SerializeAsAny[JudgeConfig], BeforeValidator(parse_judge_config)]


def parse_critique_config(value: Any) -> JudgeConfig | None:
    """A recipe's `critique:` section: a judge of `CRITIQUE_TYPE` (no `type:` to give)."""
    if value is None or isinstance(value, JudgeConfig):
        return value
    if not isinstance(value, dict):
        raise ValueError("`critique:` is a mapping with a `constitution:`")
    if "type" in value:
        raise field_error(
            ("type",), "`critique:` takes no `type:`; other judges go under `judges:`", value["type"]
        )
    return _REGISTRY[CRITIQUE_TYPE].config_class.model_validate({**value, "type": CRITIQUE_TYPE})


CritiqueConfig = Annotated[SerializeAsAny[JudgeConfig] | None, BeforeValidator(parse_critique_config)]


def ranking_key(configs: list[JudgeConfig], named: str | None = None) -> str | None:
    """The judge whose scores rank completions: the one `named` (a key or type), else the first that
    ranks by default (UltraFeedback), else the first that gives scores."""
    scoring = [c for c in configs if judge_class(c.type).gives_scores]
    if named:
        return next((c.key for c in configs if named in (c.key, c.type)), named)
    first = next((c for c in scoring if judge_class(c.type).ranks_by_default), None)
    return (first or next(iter(scoring), None)).key if (first or scoring) else None


def pick(configs: list[JudgeConfig], name: str | None, options: dict[str, Any] | None = None) -> JudgeConfig:
    """The judge a command line or a gate names: a configured judge (its key or type), else a registered
    type built with `options`. With no name: the type whose config takes every option given, else the
    first configured judge of `EVAL_DEFAULT_TYPE`, else the first that gives scores, else a default one."""
    options = {k: v for k, v in (options or {}).items() if v is not None}
    if name is None and options:
        fits = [k for k, cls in _REGISTRY.items() if set(options) <= set(cls.config_class.model_fields)]
        name = fits[0] if len(fits) == 1 else None
    if name is None:
        scoring = [c for c in configs if judge_class(c.type).gives_scores]
        found = next((c for c in configs if c.type == EVAL_DEFAULT_TYPE), next(iter(scoring), None))
        return found or parse_judge_config({"type": EVAL_DEFAULT_TYPE})
    for c in configs:
        if name in (c.key, c.type):
            return c.model_copy(update=options) if options else c
    return parse_judge_config({"type": name, **options})
