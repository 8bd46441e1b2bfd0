"""Switches read from the environment, shared by flows and trainers."""

from __future__ import annotations

import os
import sys


def progress_enabled() -> bool:
    """Progress bars on a terminal; RLAIF_PROGRESS=1/0 forces them on/off."""
    forced = os.environ.get("RLAIF_PROGRESS", "").strip().lower()
    if forced:
        return forced in ("1", "true", "yes", "on")
    return sys.stderr.isatty()
