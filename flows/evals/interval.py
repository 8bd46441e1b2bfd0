"""The Wilson score interval of a proportion (win rates, a judge's agreement with a reviewer)."""

from __future__ import annotations

import math


def wilson(p: float, n: int, z: float = 1.96) -> tuple[float, float]:
    """95% (z = 1.96) interval of a proportion `p` observed over `n` trials; (0, 1) without trials."""
    if n == 0:
        return (0.0, 1.0)
    den = 1 + z * z / n
    centre = (p + z * z / (2 * n)) / den
    half = z * math.sqrt(p * (1 - p) / n + z * z / (4 * n * n)) / den
    return (max(0.0, centre - half), min(1.0, centre + half))
