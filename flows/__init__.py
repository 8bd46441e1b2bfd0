"""Prefect flows and tasks (generate, judge, critique, build, train, pipeline) and the `rlaif` CLI."""
