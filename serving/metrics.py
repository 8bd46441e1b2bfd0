"""vLLM's Prometheus counters (`GET /metrics`): prefix-cache hits and queries, read before and after a run."""

from __future__ import annotations

import httpx

HITS = "vllm:prefix_cache_hits_total"
QUERIES = "vllm:prefix_cache_queries_total"


def prefix_cache_counters(base_url: str, timeout: float = 5.0) -> tuple[float, float] | None:
    """(hits, queries) in tokens since the server started; None when the endpoint has no vLLM metrics."""
    root = base_url.rstrip("/").removesuffix("/v1")
    try:
        resp = httpx.get(f"{root}/metrics", timeout=timeout)
    except httpx.HTTPError:
        return None
    if resp.status_code != 200:
        return None
    hits = queries = 0.0
    found = False
    for line in resp.text.splitlines():
        name = line.split("{", 1)[0].split(" ", 1)[0]
        if name in (HITS, QUERIES):
            found = True
            value = float(line.rsplit(" ", 1)[-1])
            hits, queries = (hits + value, queries) if name == HITS else (hits, queries + value)
    return (hits, queries) if found else None


def snapshot(base_urls: list[str]) -> dict[str, tuple[float, float]]:
    """Counters of every endpoint that has them."""
    out = {}
    for url in dict.fromkeys(base_urls):
        c = prefix_cache_counters(url)
        if c is not None:
            out[url] = c
    return out


def hit_rates(
    before: dict[str, tuple[float, float]], after: dict[str, tuple[float, float]]
) -> dict[str, dict]:
    """Per endpoint: prefix-cache hits / queries (tokens) between two snapshots (whole server: every
    stage and any other client of it)."""
    out = {}
    for url, (h1, q1) in after.items():
        h0, q0 = before.get(url, (0.0, 0.0))
        hits, queries = h1 - h0, q1 - q0
        out[url] = {"hits": int(hits), "queries": int(queries),
                    "hit_rate": round(hits / queries, 4) if queries > 0 else None}  # fmt: skip
    return out
