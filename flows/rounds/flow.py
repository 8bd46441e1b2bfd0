"""The Prefect flow of `rlaif iterate` (and of a `rlaif schedule RECIPE --iterate` deployment, which runs
the next unfinished round per scheduled run): each round's pipeline is a sub-flow run of it."""

from __future__ import annotations

from pathlib import Path

from prefect import flow


@flow(name="rlaif-iterate")
def iterate_flow(
    recipe_path: str, out: str | None = None, count: int | None = None, limit: int | None = None,
    next_only: bool = True, no_gate: bool = False,
) -> dict:  # fmt: skip
    """Rounds 1..count of the recipe (finished ones read back); paths and numbers in, never rows."""
    from flows.recipe import load_run
    from flows.rounds.loop import iterate

    recipe, out_dir = load_run(recipe_path, limit or None, out)
    done = iterate(recipe, out_dir, count=count, recipe_dir=Path(recipe_path).parent, next_only=next_only,
                   no_gate=no_gate)  # fmt: skip
    return {"out_dir": str(out_dir), "rounds_finished": len(done), "rounds": [r.model_dump() for r in done]}
