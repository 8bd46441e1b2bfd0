"""Score (prompt, answer) conversations with a local sequence-classification reward model.

Normalisation constants (mean/std over the training responses) live beside the model in
`reward_normalization.json`, so PPO and the reward-model judge see the same scale.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

NORMALIZATION_FILE = "reward_normalization.json"


def conversation_text(tok: Any, prompt: list[dict[str, str]], answer: str) -> str:
    return tok.apply_chat_template(prompt + [{"role": "assistant", "content": answer}], tokenize=False)


def raw_scores(
    model: Any, tok: Any, texts: list[str], max_length: int = 512, batch_size: int = 8
) -> list[float]:
    import torch

    out: list[float] = []
    model.eval()
    for i in range(0, len(texts), batch_size):
        enc = tok(texts[i : i + batch_size], return_tensors="pt", padding=True, truncation=True,
                  max_length=max_length, add_special_tokens=False)  # fmt: skip
        with torch.no_grad():
            logits = model(**{k: v.to(model.device) for k, v in enc.items()}).logits
        out += [float(x) for x in logits[:, 0].float()]
    return out


def read_normalization(model_dir: str | Path) -> tuple[float, float]:
    p = Path(model_dir) / NORMALIZATION_FILE
    if not p.exists():
        return 0.0, 1.0
    d = json.loads(p.read_text())
    return float(d["mean"]), float(d["std"]) or 1.0


class RewardScorer:
    """A trained reward model, loaded once, returning normalised scores."""

    def __init__(self, model_dir: str | Path, max_length: int = 512) -> None:
        from transformers import AutoModelForSequenceClassification, AutoTokenizer

        self.model_dir = str(model_dir)
        self.tok = AutoTokenizer.from_pretrained(self.model_dir)
        if self.tok.pad_token is None:
            self.tok.pad_token = self.tok.eos_token
        self.model = AutoModelForSequenceClassification.from_pretrained(self.model_dir, num_labels=1)
        self.model.config.pad_token_id = self.tok.pad_token_id
        self.mean, self.std = read_normalization(self.model_dir)
        self.max_length = max_length

    def score(self, prompts: list[list[dict[str, str]]], answers: list[str]) -> list[float]:
        texts = [conversation_text(self.tok, p, a) for p, a in zip(prompts, answers)]
        return [(s - self.mean) / self.std for s in raw_scores(self.model, self.tok, texts, self.max_length)]
