"""`rlaif generate` and `rlaif run`: a recipe's completions or its whole pipeline.

Re-running either into the same folder resumes it; `run` ends with `closing_table`.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from flows.dataset.build import BuildResult
    from flows.engine.summary import RunSummary
    from flows.recipe import Recipe


def _recipe_args(p: argparse.ArgumentParser) -> None:
    p.add_argument("recipe", help="recipe YAML (see recipes/demo.yaml)")
    p.add_argument("--limit", type=int, help="use only the first N prompts")
    p.add_argument("--out", help="output folder (overrides the recipe's `output`)")


def load_with_overrides(args: argparse.Namespace) -> tuple[Recipe, Path]:
    """`recipe.load_run` with the command line's `--limit` and `--out`."""
    from flows.recipe import load_run

    return load_run(args.recipe, getattr(args, "limit", None), getattr(args, "out", None))


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
    summary = run_pipeline(recipe, out, recipe_dir=Path(args.recipe).parent, no_gate=args.no_gate)
    print(closing_table(summary))
    print(summary.one_line())
    return 0


def lint_line(b: BuildResult) -> str:
    """The lints in one cell: what a user should notice before training (details: the card)."""
    lint, st = b.lints, b.stats
    parts = [f"{lint.truncated_completions} of {b.completions} answers cut at max_tokens"]
    lost = st.truncated_chosen_dropped + st.truncated_sft_dropped
    if lint.truncated_completions:
        parts[0] += f" (never chosen; {lost} pairs/SFT rows lost: raise sampling.max_tokens)" if lost else ""
    parts.append(f"{lint.identical_pairs_dropped + lint.empty_pairs_dropped} identical/empty pairs dropped")
    parts.append(f"{lint.exact_duplicate_prompts + lint.near_duplicate_prompts} duplicate prompts")
    if lint.decontaminated_prompts:
        parts.append(f"{lint.decontaminated_prompts} prompts decontaminated")
    return ", ".join(parts)


def ledger_line(b: BuildResult) -> str:
    """The ledger in one cell (it closed, or the build would have failed): given -> kept, drops counted."""
    led = b.ledger
    cand = sum(a.given for a in led.pairs.values())
    kept = sum(a.kept for a in led.pairs.values())
    return (f"{led.prompts.given} prompts -> {led.prompts.kept} rows, {led.samples.given} samples -> "
            f"{led.samples.kept} completions, {cand} candidate pairs -> {kept} pairs; every drop named on the card")  # fmt: skip


def closing_table(summary: RunSummary) -> str:
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
        rows.append(("lints", lint_line(b)))
        rows.append(("ledger", ledger_line(b)))
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
            if not st.requests and st.replayed
            else ""
        )
        rows.append((f"stage {name}", f"{st.wall_s:.0f}s, {st.requests} requests{tps}"))
    for key, u in summary.usage.items():
        if not (u.prompt_tokens or u.completion_tokens):
            continue  # a judge that runs locally sends nothing
        hit = u.cache_hit_rate()
        cost = f", ${u.cost_usd:,.4f} (this run ${u.new_cost_usd:,.4f})" if u.cost_usd is not None else ""
        rows.append((f"tokens {key}", f"{u.prompt_tokens:,} prompt ({'-' if hit is None else f'{hit:.0%}'} "
                     f"cached) + {u.completion_tokens:,} completion{cost}"))  # fmt: skip
    if summary.gate:
        g = summary.gate
        rows.append(("judge gate", g.line() + (" (overridden by --no-gate)" if g.overridden else "")))
    for url, m in summary.prefix_cache.items():
        if m.get("hit_rate") is not None:
            rows.append(
                (
                    f"prefix cache {url}",
                    f"{m['hit_rate']:.0%} of {m['queries']:,} prompt tokens (vLLM /metrics)",
                )
            )
    if summary.engine.get("flow_run"):
        rows.append(("prefect flow run", summary.engine["flow_run"]))
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
        again = " (trained before on this dataset with these fields: kept; delete it to train again)"
        rows.append((f"{t['method']} model", t["output"] + (again if t.get("cached") else "")))
    out = Path(summary.out_dir)
    rows += [("dataset (datasets)", f"{out}/binarized, {out}/ultrafeedback"), ("dataset card", f"{out}/README.md"),
             ("summary", f"{out}/summary.json")]  # fmt: skip
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"  {k.ljust(width)}  {v}" for k, v in rows)


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
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
        "Local models are served by vLLM on 127.0.0.1 (started, or reused when already up). A recipe "
        "`gate:` checks the judge on labelled pairs first (exit 3 below its thresholds); a `budget:` "
        "stops the run when reached (exit 4; re-run to continue).",
    )  # fmt: skip
    _recipe_args(p)
    p.add_argument("--no-gate", action="store_true",
                   help="go on when the recipe's judge gate fails (its figures still go to the card)")  # fmt: skip
    p.set_defaults(fn=cmd_run)
