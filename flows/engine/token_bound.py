"""Upper bounds on a request's prompt tokens, which the budget holds before the request is sent.

A local model's own tokenizer and chat template count them exactly (plus a small margin); behind an
endpoint the bound is the prompt's UTF-8 bytes plus a per-message and per-request allowance for the
chat template: byte-level BPE tokenizers never make more tokens than bytes.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import lru_cache
from pathlib import Path
from typing import Any

BYTES_PER_MESSAGE_ALLOWANCE = 16  # role markers of a chat template, per message
BYTES_PER_REQUEST_ALLOWANCE = 64  # a template's default system prompt and the generation prompt
TOKENIZER_MARGIN = 8  # tokens added to an exact count (special tokens a server may add)

_LOCK = threading.Lock()

Messages = list[dict[str, str]]


def byte_bound(messages: Messages) -> int:
    """Tokens a prompt can take with any byte-level tokenizer: its bytes plus the template's allowance."""
    return BYTES_PER_REQUEST_ALLOWANCE + sum(
        len((m.get("content") or "").encode()) + BYTES_PER_MESSAGE_ALLOWANCE for m in messages
    )


@lru_cache(maxsize=8)
def _tokenizer(model_dir: str) -> Any:
    from transformers import AutoTokenizer

    with _LOCK:  # transformers' lazy imports race when threads load at once
        return AutoTokenizer.from_pretrained(model_dir)


def chat_tokens(tok: Any, messages: Messages) -> int:
    """A prompt's tokens as the model's server counts them: its chat template with the generation prompt."""
    ids = tok.apply_chat_template(messages, add_generation_prompt=True, tokenize=True)
    if isinstance(ids, dict) or hasattr(ids, "keys"):
        ids = ids["input_ids"]
    return len(ids)


def local_tokenizer(model_dir: str | None) -> Any | None:
    """The tokenizer of a local model folder that has a chat template (loaded once), else None. Never
    downloads: a name that is not a local folder gives None."""
    if not model_dir or not Path(model_dir).is_dir():
        return None
    try:
        tok = _tokenizer(model_dir)
        chat_tokens(tok, [{"role": "user", "content": "x"}])
    except Exception:  # no tokenizer or no template in the folder
        return None
    return tok


def prompt_bound(model_dir: str | None) -> Callable[[Messages], int]:
    """The bound for one model: its tokenizer when `model_dir` is a local model folder with a chat
    template, else `byte_bound`."""
    tok = local_tokenizer(model_dir)
    if tok is None:  # the stated bound
        return byte_bound
    return lambda messages: chat_tokens(tok, messages) + TOKENIZER_MARGIN
