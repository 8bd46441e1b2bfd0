"""The dataset card (`OUT/README.md`, Hub-style YAML header) and the report plots (`OUT/report/`)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from flows.dataset.atomic_files import atomic_write_text
from flows.dataset.build import BuildResult
from flows.dataset.card_checks import gate_section, usage_section
from flows.dataset.gate_result import GateResult
from flows.recipe import Recipe

SMALL_JUDGE_WARNING = (
    "**The default judge is SmolLM2-135M-Instruct, a tiny model.** It runs everything offline, but "
    "its labels are close to noise: on human-labelled pairs it prefers whichever answer is shown "
    "first almost every time (see *position consistency* below). Use these pairs to test the "
    "plumbing, not to train a model you care about. For real labels point `judges[].judge` at a "
    "strong model (a bigger vLLM model or an OpenAI-compatible API) and check it first with "
    "`rlaif judge-eval`."
)


def _yaml_header(rows: dict[str, int]) -> str:
    """`configs:` for `load_dataset(folder, name)`; a split without rows is left out (`datasets`
    cannot load a 0-row Parquet file: "corresponds to no data")."""
    splits = [s for s in ("train_prefs", "test_prefs", "train_sft", "test_sft") if rows.get(s)]
    lines = ["---", "configs:", "- config_name: ultrafeedback", "  data_files:",
             "  - split: train", "    path: parquet/ultrafeedback/train.parquet"]  # fmt: skip
    if splits:
        lines += ["- config_name: binarized", "  data_files:"]
    for s in splits:
        lines += [f"  - split: {s}", f"    path: parquet/binarized/{s}.parquet"]
    lines += ["tags:", "- rlaif", "- preference", "- dpo", "- synthetic", "---", ""]
    return "\n".join(lines)


def plot_report(out_dir: Path, data: Any = None) -> list[str]:
    """Score and margin histograms and chosen/rejected lengths (from `build`'s PlotData)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    report = out_dir / "report"
    report.mkdir(parents=True, exist_ok=True)
    scores = list(data.scores) if data is not None else []
    margins = list(data.margins) if data is not None else []
    lengths = list(data.lengths) if data is not None else []
    fig, axes = plt.subplots(1, 3, figsize=(13, 3.6))
    axes[0].hist(scores, bins=17, range=(1, 5), color="#4477aa")
    axes[0].set(title="fine-grained score per completion", xlabel="score", ylabel="completions")
    axes[1].hist(margins, bins=16, color="#cc6677")
    axes[1].set(title="margin per pair (train_prefs)", xlabel="score_chosen - score_rejected")
    if lengths:
        lc, lr = [c for c, _ in lengths], [r for _, r in lengths]
        axes[2].scatter(lr, lc, s=10, alpha=0.6)
        top = max(lc + lr + [1])
        axes[2].plot([0, top], [0, top], "k--", linewidth=0.8)
    axes[2].set(title="length (chars): chosen vs rejected", xlabel="rejected", ylabel="chosen")
    fig.tight_layout()
    path = report / "scores.png"
    fig.savefig(path, dpi=90)
    plt.close(fig)
    return [str(path)]


def lint_section(build: Any, recipe: Any) -> list[str]:
    """`## Lints`: what each lint found in the built data and how it was handled."""
    lint, st = getattr(build, "lints", None), build.stats
    if lint is None:
        return []
    spec = getattr(recipe, "lints", None)
    allow = bool(spec and spec.allow_truncated_chosen)
    drop = bool(spec and spec.drop_duplicate_prompts)
    thr = spec.near_duplicate_threshold if spec else 0.8
    kept = "dropped (later ones; `drop_duplicate_prompts: true`)" if drop else "counted, kept"
    rows = [
        ("truncated completions (finish_reason length)", lint.truncated_completions,
         "may be chosen (`allow_truncated_chosen: true`)" if allow else "never chosen, may be rejected"),
        ("pairs: truncated best passed over", st.truncated_chosen_repicked, "best complete completion chosen"),
        ("pairs: no complete completion to choose", st.truncated_chosen_dropped, "no pair"),
        ("best-of-N rows: truncated best passed over", st.truncated_sft_repicked, "best complete completion"),
        ("best-of-N rows: none complete", st.truncated_sft_dropped, "no row"),
        ("identical chosen/rejected (whitespace normalised)", lint.identical_pairs_dropped, "dropped"),
        ("empty chosen or rejected", lint.empty_pairs_dropped, "dropped"),
        ("best-of-N rows with an empty answer", lint.empty_sft_dropped, "dropped"),
        ("exact duplicate prompts", lint.exact_duplicate_prompts, kept),
        (f"near-duplicate prompts (MinHash LSH, Jaccard >= {thr})", lint.near_duplicate_prompts, kept),
    ]  # fmt: skip
    for f, n in lint.decontaminated.items():
        rows.append((f"prompts overlapping `{f}`", n, "dropped from both datasets"))
    if lint.longer_chosen_share is not None:
        rows += [("pairs where the longer answer is chosen", f"{lint.longer_chosen_share:.0%}", "signal only"),
                 ("mean length gap (chosen - rejected chars)", f"{lint.mean_length_gap:+.0f}", "signal only")]  # fmt: skip
    out = ["## Lints", "", "| lint | count | handling |", "|---|---|---|"]
    out += [f"| {what} | {n} | {how} |" for what, n, how in rows]
    if lint.decontaminated:
        ngram = spec.decontaminate_ngram if spec else 13
        out += ["", f"Decontamination: a prompt sharing a {ngram}-word n-gram with an eval prompt is "
                "dropped (a prompt shorter than that matches only an identical eval prompt)."]  # fmt: skip
    return out + [""]


def ledger_section(build: Any) -> list[str]:
    """Every prompt, sample and pair the run was given: kept, or dropped with its reason and count."""
    led = getattr(build, "ledger", None)
    if led is None:
        return []
    lines = ["## Ledger", "", "Everything the run was given is in the datasets or in a named drop; the build "
             "checks that each line adds up.", "", "| what | given | kept | dropped (why: count) |",
             "|---|---|---|---|"]  # fmt: skip
    for name, acc in led.accounts():
        why = ", ".join(f"{k}: {v}" for k, v in sorted(acc.dropped.items())) or "-"
        lines.append(f"| {name} | {acc.given} | {acc.kept} | {why} |")
    notes = {k: v for k, v in led.notes.items() if v}
    if notes:
        lines += ["", "Counted, nothing lost: " + ", ".join(f"{k.replace('_', ' ')} {v}" for k, v in notes.items())
                  + (" (a `turns` column: only the first turn is generated from)" if "turns_unused" in notes else "")
                  + "."]  # fmt: skip
    return [*lines, ""]


def review_section(build: Any) -> list[str]:
    """What people decided (`rlaif review`, RUN/review/decisions.jsonl) and what it did to the pairs."""
    rv = getattr(build, "review", None)
    if rv is None or not rv.decisions:
        return []
    lines = ["## Human review", "", f"{rv.decisions} pairs have a reviewer's decision (review/decisions.jsonl); "
             "a decided pair that stays has `origin: human`.", "", "| what | count |", "|---|---|",
             f"| accepted by a reviewer | {rv.accepted} |", f"| flipped by a reviewer | {rv.flipped} |",
             f"| tied by a reviewer | {rv.tied} |", f"| dropped by a reviewer | {rv.dropped} |",
             f"| decisions naming no pair of this build | {rv.unmatched} |"]  # fmt: skip
    if rv.unmatched:
        lines += ["", f"Decisions whose pair this build did not make (the recipe or the judges changed): "
                  f"{', '.join(rv.unmatched_examples)}{' ...' if rv.unmatched > len(rv.unmatched_examples) else ''}."]  # fmt: skip
    return [*lines, ""]


def write_card(out_dir: Path, build: BuildResult, recipe: Recipe, skipped: dict[str, int] | None = None,
               gate: GateResult | None = None, usage: dict[str, dict[str, Any]] | None = None) -> Path:  # fmt: skip
    """The card: what produced the data, counts, judge quality figures, length-bias signal; `skipped`:
    prompts the shards skipped, `gate`: the judge gate's result, `usage`: tokens and cost per stage."""
    prov_policy = recipe.policy.display_name()
    lines = [_yaml_header(build.pairs), f"# {recipe.name}: preference data made with rlaif", ""]
    lines += [
        f"Completions from **{prov_policy}** ({recipe.sampling.n} per prompt, temperature "
        f"{recipe.sampling.temperature}, max_tokens {recipe.sampling.max_tokens}), rated by LLM "
        "judges and binarised into TRL-ready chosen/rejected pairs.", "",
        "```python", "from datasets import load_from_disk",
        f"pairs = load_from_disk('{out_dir}/binarized')['train_prefs']  # prompt/chosen/rejected/margin",
        f"rows = load_from_disk('{out_dir}/ultrafeedback')              # UltraFeedback-style rows",
        "```", "",
        "Train on it with TRL as it is (`prompt`/`chosen`/`rejected` are conversational; RewardTrainer "
        "also reads `margin`), or with `rlaif train dpo --dataset " + str(out_dir) + "`:", "",
        "```python", "from trl import DPOConfig, DPOTrainer",
        "trainer = DPOTrainer(model=model, args=DPOConfig(output_dir='dpo'), train_dataset=pairs,",
        "                     processing_class=tokenizer)", "```", "",
    ]  # fmt: skip
    small_default = any("smollm2-135m" in str(j.get("model", "")).lower() for j in build.judges.values())
    if small_default:
        lines += ["> " + SMALL_JUDGE_WARNING, ""]
    lines += ["## Counts", "", "| what | count |", "|---|---|",
              f"| prompts | {build.prompts} |", f"| completions | {build.completions} |"]  # fmt: skip
    for split, n in build.pairs.items():
        lines.append(f"| {split} | {n} |")
    st = build.stats
    lines += [f"| pairs dropped as ties | {st.ties_dropped} |",
              f"| pairs under min_margin | {st.below_margin} |",
              f"| prompts with < 2 completions (no pair) | {st.too_few_completions} |",
              f"| prompts without 2 scored completions | {st.unscored} |",
              f"| pairs where the pairwise verdict disagreed | {st.verdict_disagrees} |",
              f"| pairs from the constitution | {build.constitution_pairs} |", ""]  # fmt: skip
    for k, v in (skipped or {}).items():
        lines.insert(-1, f"| prompts skipped: {k} | {v} |")
    lines += review_section(build)
    lines += ledger_section(build)
    lines += ["## Judges", "", "| judge | type | model | requests | parse failures | quality |",
              "|---|---|---|---|---|---|"]  # fmt: skip
    for key, f in build.judges.items():
        q = f.get("quality", "")
        lines.append(f"| {key} | {f['type']} | {f['model']} | {f['requests']} | "
                     f"{f['parse_failures']} | {q} |")  # fmt: skip
    lines.append("")
    lines += gate_section(gate) + usage_section(usage)
    lines += ["Binarisation: rule `{}`, ties {}, min_margin {} (judge score units), constitution_min_margin {} "
              "(0-1), test fraction {} (split by prompt_id).".format(
        recipe.binarize.rule, "kept" if recipe.binarize.keep_ties else "dropped", recipe.binarize.min_margin,
        recipe.binarize.constitution_min_margin, recipe.binarize.test_fraction), ""]  # fmt: skip
    if build.mean_len_chosen is not None:
        ratio = build.mean_len_chosen / max(build.mean_len_rejected or 1, 1)
        lines += ["## Length bias", "",
                  f"Mean length of chosen {build.mean_len_chosen:.0f} chars vs rejected "
                  f"{build.mean_len_rejected:.0f} chars (ratio {ratio:.2f}). A ratio far above 1 "
                  "means the judge may be rewarding length rather than quality.", ""]  # fmt: skip
    lines += lint_section(build, recipe)
    for f in build.judges.values():  # what a judge puts on the card itself (e.g. a constitution's table)
        if f.get("section"):
            lines += [f["section"]]
    lines += ["## Report", "", "![scores](report/scores.png)", "",
              "## Provenance", "", f"- recipe sha256: `{recipe.sha256()}`",
              f"- policy: {prov_policy}", "- produced by rlaif (generate → judge → build)", ""]  # fmt: skip
    path = out_dir / "README.md"
    atomic_write_text(path, "\n".join(lines))
    return path
