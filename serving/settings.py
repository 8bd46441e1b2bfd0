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


PROGRESS_EVERY_DEFAULT_S = 30.0


def progress_log_every() -> float | None:
    """Seconds between plain progress lines on stderr when the bars are off (not a terminal: CI, nohup,
    a Prefect worker's log): RLAIF_PROGRESS_EVERY, default 30; 0 (or a value that is not a number of
    seconds) keeps them off. None: no lines (the bars show progress, or they are turned off)."""
    if progress_enabled():
        return None
    raw = os.environ.get("RLAIF_PROGRESS_EVERY", "").strip()
    try:
        every = float(raw) if raw else PROGRESS_EVERY_DEFAULT_S
    except ValueError:
        return None
    return every if every > 0 else None
