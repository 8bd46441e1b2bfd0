"""The `rlaif` command line: serve, generate, run, judge-eval, constitution, train, eval-policy, schedule.

Every error a user can cause prints one line (`rlaif: error: ...`) and exits with code 2.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
from pathlib import Path

from serving.errors import RlaifError


def _quiet_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")


def _quiet_prefect_console() -> None:
    """Failed tasks reach the user as one `rlaif: error:` line, not Prefect's console tracebacks.
    Logs still go to the Prefect API (UI); RLAIF_VERBOSE=1 keeps the console output."""
    if os.environ.get("RLAIF_VERBOSE", "").lower() in ("1", "true", "yes"):
        return
    import logging

    from prefect.logging.configuration import setup_logging

    setup_logging()
    for name in ("", "prefect", "prefect._internal"):  # Prefect's console handlers sit on the root logger
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ in ("PrefectConsoleHandler", "_SafeStreamHandler"):
                handler.setLevel(logging.CRITICAL)


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/demo.yaml)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--out", help="output folder (overrides the recipe's `output`)")


def load_with_overrides(args: argparse.Namespace):  # noqa: ANN201 - returns (Recipe, Path)
    from flows.recipe import load_recipe

    recipe = load_recipe(args.recipe)
    if getattr(args, "limit", None) is not None:
        if args.limit < 1:
            raise RlaifError(f"--limit must be >= 1, got {args.limit}")
        recipe.prompts.limit = args.limit
    out = Path(args.out) if getattr(args, "out", None) else recipe.output_dir()
    return recipe, out


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from serving.vllm import VllmServer

    server = VllmServer(args.model, port=args.port, host=args.host)
    print(f"starting vLLM for {server.model_name} on {server.base_url} (log {server.log_path}) ...",
          file=sys.stderr)  # fmt: skip

    with server:
        if server.reused:
            print(f"{server.model_name} is already served at {server.base_url}; nothing to start")
            return 0
        print(f"serving {server.model_name} at {server.base_url} — Ctrl-C stops it", flush=True)
        try:
            while server.proc is None or server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


def cmd_generate(args: argparse.Namespace) -> int:
    from flows.pipeline import run_generate

    recipe, out = load_with_overrides(args)
    summary = run_generate(recipe, out, recipe_dir=Path(args.recipe).parent)
    res = summary.stages["generate"]
    rate = f"{res.tokens_per_s():.1f} tokens/s" if res.requests else "all from the journal, 0 requests"
    print(f"generate: {res.prompts} prompts, {res.rows} completions, {res.completion_tokens} tokens, {rate}, "
          f"skipped {res.skipped or 0} -> {out}")  # fmt: skip

    return 0


def cmd_run(args: argparse.Namespace) -> int:
    from flows.pipeline import run_pipeline

    recipe, out = load_with_overrides(args)
    summary = run_pipeline(recipe, out, recipe_dir=Path(args.recipe).parent)
    print(closing_table(summary))
    print(summary.one_line())
    return 0


def closing_table(summary) -> str:  # noqa: ANN001 - a RunSummary
    """What a user wants to see at the end: pairs, judge quality, training effect, where things are."""
    b = summary.build
    rows: list[tuple[str, str]] = []
    if b is not None:
        rows.append(
            ("pairs (train/test)", f"{b.pairs.get('train_prefs', 0)} / {b.pairs.get('test_prefs', 0)}")
        )
        rows.append(("best-of-N SFT rows", str(b.pairs.get("train_sft", 0) + b.pairs.get("test_sft", 0))))
        if b.constitution_pairs:
            rows.append(("pairs from the constitution", str(b.constitution_pairs)))
        for key, f in b.judges.items():
            for label, value in (f.get("headline") or {}).items():
                rows.append(
                    (f"judge {key}: {label}", f"{value:.2f}" if isinstance(value, float) else str(value))
                )
            rows.append((f"judge {key}: parse failures", str(f["parse_failures"])))
    for name, st in summary.stages.items():
        tps = (
            f", {st.tokens_per_s():.1f} tok/s"
            if st.new_completion_tokens
            else " (from cache)"
            if not st.requests and name != "build"
            else ""
        )
        rows.append((f"stage {name}", f"{st.wall_s:.0f}s, {st.requests} requests{tps}"))
    t = summary.train
    if t:
        acc = (t.get("preference_accuracy_before"), t.get("preference_accuracy_after"))
        if acc[0] is not None:
            rows.append(
                (f"{t['method']}: preference accuracy before -> after", f"{acc[0]:.2f} -> {acc[1]:.2f}")
            )
        if t.get("eval_rewards_accuracy") is not None:
            rows.append(
                (f"{t['method']}: eval rewards/accuracies (after)", f"{t['eval_rewards_accuracy']:.2f}")
            )
        if t.get("test_accuracy") is not None:
            rows.append((f"{t['method']}: test accuracy", f"{t['test_accuracy']:.2f}"))
        rows.append((f"{t['method']} model", t["output"]))
    out = Path(summary.out_dir)
    rows += [("dataset (datasets)", f"{out}/binarized, {out}/ultrafeedback"), ("dataset card", f"{out}/README.md"),
             ("summary", f"{out}/summary.json")]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlaif",
        description="Preference data with AI feedback: a vLLM policy writes completions, LLM judges "
        "rate and compare them, constitutions drive critique-and-revision, and the result is a "
        "Hugging Face dataset with TRL-ready chosen/rejected pairs.",
        epilog="examples:\n"
        "  rlaif run recipes/demo.yaml                  # the whole pipeline on the bundled model\n"
        "  rlaif run recipes/demo.yaml --limit 4 --out runs/try\n"
        "  rlaif constitution check constitutions/*.yaml\n"
        "  rlaif train dpo --dataset runs/demo --max-steps 50\n"
        "  rlaif schedule recipes/demo.yaml --cron '0 2 * * *'\n\n"
        "Errors print one line (`rlaif: error: ...`) and exit 2; re-running a command resumes it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)

    p = sub.add_parser("serve", help="serve a model with vLLM on 127.0.0.1 (foreground)")
    p.add_argument("--model", default=None, help="model folder or name (default: bundled SmolLM2)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.set_defaults(fn=cmd_serve)

    p = sub.add_parser(
        "generate", help="generate completions for a recipe's prompts",
        description="Generate `sampling.n` completions per prompt with the recipe's policy (no judges) and "
        "build OUT/ultrafeedback with them. Every answer is journalled under OUT/shards/: a re-run sends "
        "only what is missing, and a later `rlaif run` into the same folder reuses these completions.",
    )  # fmt: skip
    _recipe_args(p)
    p.set_defaults(fn=cmd_generate)

    p = sub.add_parser(
        "run", help="generate -> judge -> (critique) -> build -> (train) as one flow",
        description="Run the recipe's whole pipeline as one Prefect flow and write OUT/ultrafeedback, "
        "OUT/binarized (TRL-ready), Parquet, the dataset card OUT/README.md and OUT/summary.json. "
        "Local models are served by vLLM on 127.0.0.1 (started, or reused when already up).",
    )  # fmt: skip
    _recipe_args(p)
    p.set_defaults(fn=cmd_run)

    from flows import cli_more, cli_train

    cli_more.add_commands(sub)
    cli_train.add_commands(sub)
    return parser


def _sigterm(*_: object) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    _quiet_env()
    if threading.current_thread() is threading.main_thread():
        signal.signal(signal.SIGTERM, _sigterm)  # `kill` unwinds like Ctrl-C: local vLLM servers are stopped
    parser = build_parser()
    args = parser.parse_args(argv)
    _quiet_prefect_console()
    try:
        return int(args.fn(args) or 0)
    except RlaifError as exc:
        print(f"rlaif: error: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("rlaif: interrupted; finished shards are kept, re-run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130


if __name__ == "__main__":
    sys.exit(main())
