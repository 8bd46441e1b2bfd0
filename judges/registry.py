"""Judge types by name. Adding a judge type = one file in judges/ plus one line in `BUILTIN`
(or `register(MyJudge)` from your own code)."""

from __future__ import annotations

from typing import Annotated, Any

from pydantic import BeforeValidator, SerializeAsAny

from judges.contract import Judge, JudgeConfig
from judges.pairwise import PairwiseJudge
from judges.reward_model import RewardModelJudge
from judges.ultrafeedback import UltraFeedbackJudge
from serving.config_files import field_error

BUILTIN: list[type[Judge]] = [UltraFeedbackJudge, PairwiseJudge, RewardModelJudge]
_REGISTRY: dict[str, type[Judge]] = {}


def register(cls: type[Judge]) -> type[Judge]:
    """Make a judge type usable in recipes (`judges: - type: <cls.type>`); usable as a decorator."""
    _REGISTRY[cls.type] = cls
    return cls


for _cls in BUILTIN:
    register(_cls)


def kinds() -> list[str]:
    return list(_REGISTRY)


def judge_class(kind: str) -> type[Judge]:
    try:
        return _REGISTRY[kind]
    except KeyError:
        raise ValueError(f"unknown judge type {kind!r}; choose from {kinds()}") from None


def make_judge(config: JudgeConfig, client: Any = None) -> Judge:
    return judge_class(config.type)(config, client)


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
