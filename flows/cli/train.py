"""`rlaif train` (SFT, DPO, reward model, PPO with TRL) and `rlaif eval-policy` (win rate of A over B)."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def cmd_train(args: argparse.Namespace) -> int:
    from flows.training.train_flow import train_method

    output = args.output or str(Path(args.dataset) / "models" / args.method)
    path = train_method(
        args.method, model=args.model, dataset=args.dataset, output=output, max_steps=args.max_steps,
        batch_size=args.batch_size, learning_rate=args.learning_rate, max_length=args.max_length,
        beta=args.beta, kl_coef=args.kl_coef, lora=args.lora or None, reward_model=args.reward_model,
        use_margin=args.use_margin or None,
    )  # fmt: skip
    metrics = json.loads((path / "metrics.json").read_text())
    print(json.dumps({"output": str(path), **{k: v for k, v in metrics.items() if k != "log_history"}}))
    return 0


def cmd_eval_policy(args: argparse.Namespace) -> int:
    from flows.evals.policy_eval import eval_policy

    result = eval_policy(args.model, args.baseline, args.prompts, column=args.column, limit=args.limit,
                         judge_recipe=args.recipe, max_tokens=args.max_tokens, port=args.port)  # fmt: skip
    print(json.dumps(result.model_dump()))
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("train", help="train on a build output: sft | dpo | reward | ppo (TRL)")
    p.add_argument("method", choices=["sft", "dpo", "reward", "ppo"])
    p.add_argument("--dataset", required=True, help="build output folder (has binarized/)")
    p.add_argument("--model", default=None, help="base model (default: bundled SmolLM2)")
    p.add_argument("--output", default=None, help="output folder (default: DATASET/models/METHOD)")
    p.add_argument("--max-steps", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=None)
    p.add_argument("--learning-rate", type=float, default=None)
    p.add_argument("--max-length", type=int, default=None)
    p.add_argument("--beta", type=float, default=None, help="DPO: KL strength")
    p.add_argument("--kl-coef", type=float, default=None, help="PPO: KL coefficient")
    p.add_argument("--lora", action="store_true", help="train LoRA adapters (peft), merged on save")
    p.add_argument("--reward-model", default=None, help="PPO: folder from `rlaif train reward`")
    p.add_argument("--use-margin", action="store_true", help="reward: use the margin column")
    p.set_defaults(fn=cmd_train)

    p = sub.add_parser("eval-policy", help="win rate of model A over baseline B, judged pairwise")
    p.add_argument("--model", required=True, help="model folder A (e.g. a DPO output)")
    p.add_argument("--baseline", required=True, help="model folder or name B (e.g. smollm2-135m-instruct)")
    p.add_argument("--prompts", required=True, help="held-out prompts (JSONL/Parquet/CSV/datasets folder)")
    p.add_argument("--column", default="prompt", help="prompt column ('turns' for MT-bench files)")
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--recipe", default=None, help="recipe whose pairwise judge endpoint to use")
    p.add_argument("--max-tokens", type=int, default=128)
    p.add_argument("--port", type=int, default=8766, help="port for serving A and B in turn")
    p.set_defaults(fn=cmd_eval_policy)
