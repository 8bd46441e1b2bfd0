"""The Prefect flow a scheduled `rlaif schedule RECIPE --iterate` deployment runs: the next unfinished
round of the recipe's rounds (one per scheduled run), in the recipe's own output folder."""

from __future__ import annotations

from pathlib import Path

from prefect import flow


@flow(name="rlaif-iterate", log_prints=True)
def iterate_flow(recipe_path: str, out: str | None = None, next_only: bool = True) -> dict:
    """Entry point for deployments; each round's pipeline is a sub-flow run of this one."""
    from flows.recipe import load_recipe
    from flows.rounds.report import rounds_table
    from flows.rounds.run import iterate

    recipe = load_recipe(recipe_path)
    out_dir = Path(out) if out else recipe.output_dir()
    done = iterate(recipe, out_dir, recipe_dir=Path(recipe_path).parent, next_only=next_only)
    print(rounds_table(done))
    return {"out_dir": str(out_dir), "rounds_finished": len(done)}
