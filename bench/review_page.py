"""Review page bench: how fast `rlaif review` answers on a big run, against what a notebook user would do.

Starts the real `rlaif review RUN` (uvicorn, a subprocess) and times over HTTP, from the moment the
command is started: the first page of the default queue (least certain first), then warm figures
(median of 20) for that page, a filtered page (judges disagree), a text search, one pair's detail and
the overview; the server's RSS. The baseline is the notebook way to the same first page:
`load_from_disk(RUN/binarized)` both preference splits `.to_pandas()`, sorted by margin, 25 rows.

    .venv/bin/python bench/scale.py --sizes 65536 --resume 0 --work /tmp/scale65 --keep   # the run (~25 min)
    .venv/bin/python bench/review_page.py --run /tmp/scale65/run-threads-65536

Without --run it makes a run of --prompts N (default 65536) with bench/scale.py's stub and recipe.
Prints: `first page (cold, from start) … s; warm first page … s (target 1 s: ratio …)` and the others.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request
from pathlib import Path

import psutil

ROOT = Path(__file__).resolve().parents[1]
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))


def get(url: str) -> tuple[float, dict]:
    t = time.perf_counter()
    body = json.loads(NO_PROXY.open(url, timeout=60).read())
    return time.perf_counter() - t, body


def free_port() -> int:
    import socket

    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def make_run(n: int, work: Path) -> Path:
    sys.path.insert(0, str(ROOT / "bench"))
    from scale import Bench, Stub, cleanup

    try:
        b = Bench(work, Stub(20.0))
        r = b.uninterrupted(n)
        print(f"# made a run of {n} prompts in {r['wall_s']:.0f} s: {r['pairs']} pairs", flush=True)
        return r["out"]
    finally:
        cleanup()


def notebook_first_page(run: Path) -> float:
    """What a competent notebook user runs for 'the 25 lowest-margin pairs', in a fresh process."""
    code = (
        "import time; t=time.perf_counter(); import datasets, pandas as pd; "
        f"d=datasets.load_from_disk({str(run / 'binarized')!r}); "
        "df=pd.concat([d['train_prefs'].to_pandas(), d['test_prefs'].to_pandas()]); "
        "page=df.sort_values('margin', kind='stable').head(25); print(time.perf_counter()-t)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    return float(out.stdout.strip().splitlines()[-1])


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--run", help="an existing run folder (else one is made with bench/scale.py's stub)")
    ap.add_argument("--prompts", type=int, default=65536, help="prompts of the run to make (no --run)")
    ap.add_argument("--work", help="where to make the run (default: a temp folder)")
    args = ap.parse_args()
    run = Path(args.run) if args.run else make_run(args.prompts, Path(args.work or tempfile.mkdtemp()))
    port = free_port()
    base = f"http://127.0.0.1:{port}"
    env = {**os.environ, "HF_HUB_OFFLINE": "1"}
    t0 = time.perf_counter()
    proc = subprocess.Popen([str(ROOT / ".venv" / "bin" / "rlaif"), "review", str(run), "--port", str(port)],
                            stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)  # fmt: skip
    try:
        while True:
            try:
                cold, first = get(f"{base}/api/pairs?limit=25")
                break
            except OSError:
                if proc.poll() is not None:
                    print(proc.stderr.read().decode() if proc.stderr else "", file=sys.stderr)
                    return 1
                time.sleep(0.05)
        from_start = time.perf_counter() - t0
        total = first["total"]
        pid = first["rows"][0]["pair_id"]

        def warm(path: str, k: int = 20) -> float:
            return statistics.median(get(base + path)[0] for _ in range(k))

        figures = {
            "first page (warm)": warm("/api/pairs?limit=25"),
            "page 100 (warm)": warm("/api/pairs?limit=25&offset=2500"),
            "judges disagree (warm)": warm(
                "/api/pairs?limit=25&flag=" + urllib.parse.quote("judges disagree")
            ),
            "text search (warm)": warm("/api/pairs?limit=25&q=the%20river", 5),
            "one pair's detail (warm)": warm(f"/api/pair/{pid}"),
            "overview (warm)": warm("/api/overview", 5),
        }
        rss = psutil.Process(proc.pid).memory_info().rss / 2**20
    finally:
        proc.terminate()
        proc.wait(timeout=30)
    notebook = notebook_first_page(run)
    print(f"# run {run}: {total} pairs; {os.cpu_count()} cores")
    print(f"first page, cold (command start -> first page answered): {from_start:.2f} s (of which the request "
          f"{cold * 1000:.0f} ms); target 1 s: ratio {from_start / 1.0:.2f}")  # fmt: skip
    for name, s in figures.items():
        print(f"{name}: {s * 1000:.1f} ms")
    print(f"server RSS after these: {rss:.0f} MB")
    print(f"notebook baseline (load_from_disk + to_pandas + sort, fresh process): {notebook:.2f} s; "
          f"review first page cold is {notebook / from_start:.1f}x faster, warm {notebook / figures['first page (warm)']:.0f}x")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
