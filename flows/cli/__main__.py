"""`python -m flows.cli ...` (and `accelerate launch -m flows.cli ...`): the same as `rlaif ...`."""

from flows.cli import entry

entry()
