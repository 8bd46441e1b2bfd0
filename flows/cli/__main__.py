"""`python -m flows.cli ...` (and `accelerate launch -m flows.cli ...`): the same as `rlaif ...`."""

import sys

from flows.cli import main

sys.exit(main())
