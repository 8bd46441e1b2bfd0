"""What a user reads about the rounds: a section in each round's dataset card, `OUT/rounds.json`, a
plot of win rate, reward margin and answer length per round (length creep is how iterated DPO
usually fails), and the rows of the closing table."""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

from flows.dataset.atomic_files import atomic_write_text

if TYPE_CHECKING:
    from flows.rounds.loop import RoundResult

MARK = "\n## On-policy round\n"


def card_section(r: RoundResult) -> str:
    parent = f"round {r.parent} (`{Path(r.out_dir).parent / f'round-{r.parent}'}`)" if r.parent else "none"
    return (
        f"{MARK}\n"
        f"| | |\n|---|---|\n"
        f"| round | {r.round} |\n"
        f"| parent round | {parent} |\n"
        f"| policy that wrote the completions | `{r.policy.model}` (served as `{r.policy.served_as}`, "
        f"weights sha256 `{r.policy.sha256}`) |\n"
        f"| policy this round trained | `{r.trained.model}` (sha256 `{r.trained.sha256}`) |\n"
        f"| training | {trained_how(r)} |\n"
        f"| win rate of the trained policy vs the base, held-out prompts, both orders | {r.vs_base.cell()} "
        f"(n={r.vs_base.n}: {r.vs_base.wins} wins, {r.vs_base.losses} losses, {r.vs_base.ties} ties) |\n"
        f"| win rate vs the previous policy | {r.vs_previous.cell()} (n={r.vs_previous.n}) |\n"
        f"| mean answer length (characters) | {r.mean_len:.0f} held-out ({growth(r)} the base policy's); "
        f"{'-' if r.completion_len is None else f'{r.completion_len:.0f}'} over this round's completions |\n"
        f"| pairs whose chosen answer is the longer one | {share(r.longer_chosen_share)} |\n"
        f"| DPO reward margin (eval) | {'-' if r.reward_margin is None else f'{r.reward_margin:.4f}'} |\n"
        f"| judge re-checked on the gate pairs | {r.gate.line() if r.gate else 'no gate in the recipe'} |\n"
        + (f"| round time | {time_cell(r)} |\n" if r.timing else "")
        + (f"| rounds stopped here | {r.stopped} |\n" if r.stopped else "")
    )


def trained_how(r: RoundResult) -> str:
    """The method, what was saved and how it is served (and the PPO round's reward model)."""
    kind = ("a LoRA adapter, served by name on the base policy's vLLM (loaded at runtime)" if r.trained.adapter
            else "a full model folder, served by its own vLLM")  # fmt: skip
    reward = (
        "" if r.reward_accuracy is None else f"; its reward model's test accuracy {r.reward_accuracy:.2f}"
    )
    return f"{r.method or 'dpo'}: {kind}{reward}"


def time_cell(r: RoundResult) -> str:
    t = r.timing
    assert t is not None
    return (f"{t.wall_s:.0f} s: generation and judging {t.generate_s:.0f} s, training {t.train_s:.0f} s, "
            f"held-out answers and judging {t.eval_requests_s:.0f} s, the rest {t.overhead_s:.0f} s (policy "
            f"serving {t.serve_s:.1f} s: {t.server_starts} vLLM starts, {t.adapter_loads} adapter loads)")  # fmt: skip


def growth(r: RoundResult) -> str:
    g = r.length_growth()
    return "-" if g is None else f"{g:.2f}x"


def share(x: float | None) -> str:
    return "-" if x is None else f"{x:.0%}"


def gate_cell(r: RoundResult) -> str:
    acc = r.gate.figures.get("accuracy") if r.gate else None
    return "-" if not isinstance(acc, (int, float)) else f"{acc:.2f}"


def append_card(rdir: Path, r: RoundResult) -> None:
    """Add (or replace) the round's section in its dataset card."""
    card = rdir / "README.md"
    text = card.read_text() if card.is_file() else f"# Round {r.round}\n"
    text = text.split(MARK)[0].rstrip("\n") + "\n" + card_section(r)
    atomic_write_text(card, text)


def write_report(out: Path, rounds: list[RoundResult]) -> None:
    """OUT/rounds.json and OUT/report/rounds.png."""
    atomic_write_text(out / "rounds.json", json.dumps([r.model_dump() for r in rounds], indent=2) + "\n")
    if not rounds:
        return
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    ks = [r.round for r in rounds]
    fig, ax = plt.subplots(1, 4, figsize=(15, 3.4))
    for key, label in (("vs_base", "vs base"), ("vs_previous", "vs previous round")):
        w = [getattr(r, key) for r in rounds]
        ax[0].errorbar(ks, [x.rate for x in w], yerr=[[x.rate - x.ci_low for x in w], [x.ci_high - x.rate for x in w]],
                       marker="o", capsize=4, label=label)  # fmt: skip
    ax[0].axhline(0.5, color="grey", lw=0.8, ls="--")
    ax[0].set(title="win rate (95% ci)", xlabel="round", ylim=(0, 1))
    ax[0].legend(fontsize=8)
    ax[1].plot(
        ks, [r.reward_margin if r.reward_margin is not None else float("nan") for r in rounds], marker="o"
    )
    ax[1].set(title="DPO reward margin (eval)", xlabel="round")
    ax[2].plot(ks, [r.mean_len for r in rounds], marker="o", label="held-out")
    ax[2].plot(
        ks, [r.completion_len or float("nan") for r in rounds], marker="s", label="round's completions"
    )
    ax[2].set(title="mean answer length (chars)", xlabel="round")
    ax[2].legend(fontsize=8)
    ax[3].plot(ks, [r.longer_chosen_share if r.longer_chosen_share is not None else float("nan") for r in rounds],
               marker="o", label="longer chosen")  # fmt: skip
    acc = [r.gate.figures.get("accuracy") if r.gate else None for r in rounds]
    ax[3].plot(
        ks,
        [a if isinstance(a, (int, float)) else float("nan") for a in acc],
        marker="s",
        label="judge accuracy",
    )
    ax[3].set(title="judge: longer-chosen share, gate accuracy", xlabel="round", ylim=(0, 1))
    ax[3].legend(fontsize=8)
    for a in ax:
        a.set_xticks(ks)
    fig.tight_layout()
    (out / "report").mkdir(parents=True, exist_ok=True)
    fig.savefig(out / "report" / "rounds.png", dpi=90)
    plt.close(fig)


def rounds_table(rounds: list[RoundResult]) -> str:
    """The closing table of `rlaif iterate`: one row per round."""
    head = (f"  {'round':<6} {'policy':<28} {'pairs':>5}  {'win vs base [95% ci]':<22} {'vs previous':<22} "
            f"{'mean len':>8} {'vs base':>7} {'longer chosen':>13} {'judge acc':>9}")  # fmt: skip
    lines = [head]
    for r in rounds:
        lines.append(f"  {r.round:<6} {r.policy.served_as[:28]:<28} {r.pairs:>5}  {r.vs_base.cell():<22} "
                     f"{r.vs_previous.cell():<22} {r.mean_len:>8.0f} {growth(r):>7} {share(r.longer_chosen_share):>13} "
                     f"{gate_cell(r):>9}")  # fmt: skip
    return "\n".join(lines)
