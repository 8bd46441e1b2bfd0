"""`rlaif iterate`: on-policy rounds (serve the last trained policy, generate, judge, build, train,
evaluate), each in OUT/round-k/; re-running resumes at the round and stage it stopped in."""

from __future__ import annotations

import argparse


def cmd_iterate(args: argparse.Namespace) -> int:
    from flows.cli.run import load_with_overrides
    from flows.rounds.flow import iterate_flow
    from flows.rounds.loop import RoundResult
    from flows.rounds.report import rounds_table
    from serving.errors import RlaifError

    _, out = load_with_overrides(args)  # a bad recipe fails here, before Prefect starts
    if args.rounds is not None and args.rounds < 1:
        raise RlaifError(f"--rounds must be >= 1, got {args.rounds}")
    res = iterate_flow(recipe_path=args.recipe, out=str(out), count=args.rounds, limit=args.limit,
                       next_only=args.next, no_gate=args.no_gate)  # fmt: skip
    done = [RoundResult.model_validate(r) for r in res["rounds"]]
    print(rounds_table(done))
    if done and done[-1].stopped:
        print(f"rounds: stopped after round {done[-1].round}: {done[-1].stopped}")
    print(f"rounds: {len(done)} finished -> {out} (rounds.json, report/rounds.png, round-k/)")
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser(
        "iterate",
        help="on-policy rounds: train, serve the trained policy, generate and judge again; win rate per round",
        description="Round k serves the policy round k-1 trained (round 1: the recipe's policy) on vLLM, "
        "generates on its own seeded slice of the prompts, judges, builds and trains (DPO unless the "
        "recipe says sft) into OUT/round-k/, then judges the new policy against the base and the previous "
        "policy on held-out prompts in both orders (win rate, 95%% interval). The recipe's `rounds:` "
        "section sets the count, prompts per round, held-out prompts, the port of the trained policies and "
        "`stop_when` rules (win rate bound, length growth, judge accuracy) that end the rounds early; a recipe "
        "`gate:` re-checks the judge every round.",
        epilog="example: rlaif iterate recipes/iterate-demo.yaml --rounds 2",
    )
    p.add_argument("recipe", help="recipe YAML with an optional `rounds:` section")
    p.add_argument("--rounds", type=int, help="number of rounds (default: rounds.count, else 2)")
    p.add_argument("--out", help="output folder (overrides the recipe's `output`)")
    p.add_argument("--limit", type=int, help="use only the first N prompts of the pool")
    p.add_argument(
        "--next", action="store_true", help="run at most one new round (what a nightly schedule does)"
    )
    p.add_argument(
        "--no-gate",
        action="store_true",
        help="run on even if a round's judge gate fails (every round re-checks the judge)",
    )
    p.set_defaults(fn=cmd_iterate)
