"""What every trainer shares: the config base, device settings, dataset checks, atomic output,
metrics.json and the curve plot."""

from __future__ import annotations

import json
import math
import os
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from serving.errors import DataError, ModelError
from serving.models import resolve_model
from serving.settings import progress_enabled
from trainers.configs import TrainConfig


def use_cuda() -> bool:
    import torch

    return torch.cuda.is_available()


def device_args(cfg: TrainConfig) -> dict[str, Any]:
    """TrainingArguments for this machine: CPU = fp32, no checkpointing; GPU = bf16."""
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    cuda = use_cuda()
    return dict(
        use_cpu=not cuda, bf16=cuda, fp16=False, gradient_checkpointing=False, report_to="none",
        per_device_train_batch_size=cfg.batch_size, per_device_eval_batch_size=cfg.batch_size,
        gradient_accumulation_steps=cfg.gradient_accumulation_steps, learning_rate=cfg.learning_rate,
        max_steps=cfg.max_steps, logging_steps=1, save_strategy="no", seed=cfg.seed,
        dataloader_num_workers=0, disable_tqdm=not progress_enabled(),
    )  # fmt: skip


def model_path(name: str) -> str:
    path = resolve_model(name)
    p = Path(path)
    if p.exists() and not (p / "config.json").exists():
        raise ModelError(f"{name}: not a model folder (no config.json)")
    return path


def binarized_dir(dataset: str) -> Path:
    p = Path(dataset)
    if (p / "binarized" / "dataset_dict.json").exists():
        return p / "binarized"
    if (p / "dataset_dict.json").exists():
        return p
    raise DataError(f"{dataset}: not a build output (no binarized/dataset_dict.json); run `rlaif run` first")


def load_split(dataset: str, split: str, columns: list[str], allow_empty: bool = False) -> Any:
    """One split of the binarized dataset, checked for the columns a trainer needs."""
    import datasets

    datasets.disable_progress_bars()
    d = datasets.load_from_disk(str(binarized_dir(dataset)))
    if split not in d:
        raise DataError(f"{dataset}: no split {split!r} (has {list(d)})")
    ds = d[split]
    missing = [c for c in columns if c not in ds.column_names]
    if missing:
        raise DataError(f"{dataset}: split {split!r} lacks column(s) {missing} (has {ds.column_names})")
    if len(ds) == 0 and not allow_empty:
        raise DataError(f"{dataset}: split {split!r} has zero rows: nothing to train on "
                        "(more prompts, more samples, or keep_ties/min_margin in the recipe)")  # fmt: skip
    return ds


def target_modules(cfg: TrainConfig) -> str | list[str]:
    """`lora_target_modules` as peft takes it: "all-linear", or a list of module names."""
    names = [m.strip() for m in cfg.lora_target_modules.split(",") if m.strip()]
    return "all-linear" if names in ([], ["all-linear"]) else names


def peft_config(cfg: TrainConfig, task_type: str = "CAUSAL_LM") -> Any:
    """A new LoRA adapter for the trainer to add; None without `lora` or when an adapter is continued."""
    if not cfg.lora or cfg.lora_adapter:
        return None
    from peft import LoraConfig

    return LoraConfig(r=cfg.lora_r, lora_alpha=cfg.lora_alpha or 2 * cfg.lora_r, lora_dropout=cfg.lora_dropout,
                      task_type=task_type, target_modules=target_modules(cfg))  # fmt: skip


def continue_adapter(model: Any, cfg: TrainConfig, reference: bool = False) -> Any:
    """`model` with `cfg.lora_adapter` loaded as its trainable "default" adapter (and, with `reference`,
    a frozen copy named "ref" for trainers that take a reference adapter); `model` when not continuing."""
    if not (cfg.lora and cfg.lora_adapter):
        return model
    from peft import PeftModel

    path = Path(cfg.lora_adapter)
    if not (path / "adapter_config.json").is_file():
        raise ModelError(f"{path}: not a LoRA adapter folder (no adapter_config.json)")
    model = PeftModel.from_pretrained(model, str(path), is_trainable=True)
    if reference:
        model.load_adapter(str(path), adapter_name="ref", is_trainable=False)
        model.set_adapter("default")
    return model


@contextmanager
def staged_output(output: str) -> Iterator[Path]:
    """Train into a temp folder beside `output`; move it into place only when everything succeeded."""
    target = Path(output)
    target.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.partial-", dir=target.parent))
    try:
        yield tmp
        if target.exists():
            shutil.rmtree(target)
        os.replace(tmp, target)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def write_metrics(
    folder: Path, method: str, log_history: list[dict[str, Any]], extra: dict[str, Any]
) -> None:
    clean = [
        {k: v for k, v in e.items() if not (isinstance(v, float) and math.isnan(v))} for e in log_history
    ]
    (folder / "metrics.json").write_text(
        json.dumps({"method": method, **extra, "log_history": clean}, indent=1)
    )
    plot_curves(folder / "curves.png", method, clean)


def plot_curves(path: Path, method: str, history: list[dict[str, Any]]) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    keys = [k for k in ("loss", "rewards/accuracies", "rewards/margins", "accuracy", "objective/rlhf_reward",
                        "objective/kl", "objective/scores", "policy/entropy_avg") if any(k in e for e in history)]  # fmt: skip
    keys = keys or ["loss"]
    fig, axes = plt.subplots(1, len(keys), figsize=(4 * len(keys), 3.2), squeeze=False)
    for ax, key in zip(axes[0], keys):
        pts = [(e.get("step", i), e[key]) for i, e in enumerate(history) if key in e and "eval_" not in key]
        if pts:
            ax.plot(*zip(*pts), marker=".")
        ax.set(title=f"{method}: {key}", xlabel="step")
    fig.tight_layout()
    fig.savefig(path, dpi=80)
    plt.close(fig)


def load_model(
    config: TrainConfig, model_cls: Any, padding_side: str = "right", **kwargs: Any
) -> tuple[Any, Any]:
    """The config's model (as `model_cls`) and its tokenizer; `trust_remote_code` only if the config says so."""
    path = model_path(config.model)
    tok = load_tokenizer(path, config.trust_remote_code, padding_side)
    model = model_cls.from_pretrained(path, trust_remote_code=config.trust_remote_code, **kwargs)
    return model, tok


def finish(
    folder: Path,
    trainer: Any,
    tok: Any,
    config: TrainConfig,
    method: str,
    extra: dict[str, Any],
    model: Any = None,
) -> Any:
    """Save the trained model (LoRA merged, or the adapter alone with `save_adapter`) + tokenizer,
    metrics.json and curves.png; returns the model."""
    trained = model if model is not None else trainer.model
    if config.lora and config.save_adapter and hasattr(trained, "peft_config"):
        trained.save_pretrained(folder, selected_adapters=["default"])  # not a trainer's "ref" copy
    else:
        if config.lora and hasattr(trained, "merge_and_unload"):
            trained = trained.merge_and_unload()
        trained.save_pretrained(folder)
    tok.save_pretrained(folder)
    write_metrics(folder, method, trainer.state.log_history, extra)
    return trained


def trained_model(trainer: Any, config: TrainConfig) -> Any:
    """The trainer's model with LoRA adapters merged (what gets evaluated and saved); with `save_adapter`
    the adapter stays separate (the model answers through it)."""
    return trainer.model.merge_and_unload() if config.lora and not config.save_adapter else trainer.model


def load_tokenizer(path: str, trust_remote_code: bool = False, padding_side: str = "right") -> Any:
    from transformers import AutoTokenizer

    tok = AutoTokenizer.from_pretrained(path, trust_remote_code=trust_remote_code)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    tok.padding_side = padding_side
    return tok


def sequence_logprob(
    model: Any, tok: Any, prompt: list[dict[str, str]], answer: str, max_length: int
) -> float:
    """Sum of log p(answer tokens | prompt) under `model` (chat template applied)."""
    import torch

    ctx = tok.apply_chat_template(prompt, add_generation_prompt=True, tokenize=False)
    full = ctx + answer
    ids = tok(full, return_tensors="pt", truncation=True, max_length=max_length, add_special_tokens=False)
    n_ctx = len(tok(ctx, add_special_tokens=False)["input_ids"])
    with torch.no_grad():
        logits = model(**{k: v.to(model.device) for k, v in ids.items()}).logits.float()
    lp = logits[0, :-1].log_softmax(-1)
    target = ids["input_ids"][0, 1:].to(lp.device)
    tok_lp = lp.gather(-1, target[:, None])[:, 0]
    return float(tok_lp[max(n_ctx - 1, 0) :].sum())


def preference_accuracy(model: Any, tok: Any, pairs: Any, max_length: int, limit: int = 64) -> float | None:
    """Share of pairs where the model gives the chosen answer a higher log-probability."""
    rows = list(pairs.select(range(min(limit, len(pairs))))) if len(pairs) else []
    if not rows:
        return None
    model.eval()
    wins = 0.0
    for r in rows:
        c = sequence_logprob(model, tok, r["prompt"], r["chosen"][0]["content"], max_length)
        j = sequence_logprob(model, tok, r["prompt"], r["rejected"][0]["content"], max_length)
        wins += 1.0 if c > j else 0.5 if c == j else 0.0
    return wins / len(rows)
