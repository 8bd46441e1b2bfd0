"""Training as a Prefect flow: the recipe's `train:` after a build, and `rlaif train`."""
