"""Scale bench: the real `rlaif run` CLI on N synthetic prompts against one fast stub endpoint.

Starts one OpenAI-compatible stub (bench/stub_server.py, 20 ms per answer), writes N unique synthetic
prompts of realistic length (bench/scale_data.py: ~97% 200-900 characters, ~3% 2,000-6,000), and runs
`.venv/bin/rlaif run RECIPE --out DIR` (generate n=4 + ultrafeedback + pairwise on the policy
endpoint, max_concurrency 64, shard_size 256, build): 20 requests per prompt. Every run of one bench
invocation shares a fresh PREFECT_HOME (Prefect's temporary server); RLAIF_PROGRESS=0, HF_HUB_OFFLINE=1.

Run (the acceptance figures; about an hour on 2 cores at 800 requests/s):

    .venv/bin/python bench/scale.py --sizes 1024,16384,65536 --resume 16384 --rerun --dask 4096

Quick check: `.venv/bin/python bench/scale.py --sizes 256,1024 --resume 2048 --rerun --dask 512`.

Prints, per N (from OUT/summary.json `engine` and the Parquet outputs):

    N=… requests=… req/s(end-to-end, process wall)=… req/s(engine)=… peak_rss_mb=… task_runs=…
        first_judged_s=… uf_rows=… pairs=…
    rss ratio 65536/1024: …                         (largest / smallest N run)
  --rerun:  re-run of finished N: requests sent=… time=…s = …% of first run
            (the largest N <= 16384 of --sizes, same command on its finished out dir)
  --resume N (default 16384; 0 = off): kill -9 of `rlaif run`'s process group once the stub has
            answered half (--kill-at F, default 0.5) of N*20 requests, then the same command again:
            re-sent requests: X (requests in flight at the kill ≤ 64 × processes)
            resumed == uninterrupted: True/False (row counts per dataset)
  --dask N (default 0 = off): the same job with `task_runner: dask`, `dask_workers: 2`:
            dask(2 processes) == threads: True/False (row counts per dataset)

Datasets are compared as multisets of rows (UltraFeedback + the four binarized splits) after dropping
`provenance.created_at`. Work files go to --work (default a temp folder, removed unless --keep).
"""

from __future__ import annotations

import argparse
import atexit
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path
from typing import Any

import psutil
from scale_data import compare_runs, recipe_yaml, row_counts, write_prompts
from stub_server import start_stub

ROOT = Path(__file__).resolve().parents[1]
RLAIF = ROOT / ".venv" / "bin" / "rlaif"
REQUESTS_PER_PROMPT = 20  # 4 generate + 4 UltraFeedback aspects + 12 pairwise (6 pairs, both orders)
CONCURRENCY = 64
NO_PROXY = urllib.request.build_opener(urllib.request.ProxyHandler({}))
CHILDREN: list[subprocess.Popen] = []  # every process we started, stopped at exit


def timeout_for(n: int) -> float:
    """Wall-clock limit of one `rlaif run` of n prompts (>= 133 requests/s, at most 3 h)."""
    return min(3 * 3600.0, 600.0 + 0.15 * n)


def kill_tree(proc: subprocess.Popen) -> None:
    """SIGKILL the process group of `proc` (started with start_new_session) and every descendant."""
    kids = []
    if proc.poll() is None:  # a reaped pid may belong to someone else by now
        try:
            kids = psutil.Process(proc.pid).children(recursive=True)
        except psutil.Error:
            pass
    try:
        os.killpg(proc.pid, signal.SIGKILL)
    except ProcessLookupError:
        pass
    for k in kids:  # a descendant that made its own session (e.g. a server) is not in the group
        try:
            k.kill()
        except psutil.Error:
            pass
    try:
        proc.wait(timeout=30)
    except subprocess.TimeoutExpired:
        pass


def cleanup() -> None:
    while CHILDREN:
        p = CHILDREN.pop()
        if p.poll() is None or getattr(p, "group", False):
            if getattr(p, "group", False):
                kill_tree(p)
            else:
                p.terminate()
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()


class Stub:
    def __init__(self, latency_ms: float) -> None:
        self.proc = start_stub(0, latency_ms)
        CHILDREN.append(self.proc)
        self.base_url: str = self.proc.base_url  # type: ignore[attr-defined]
        self.root = self.base_url.removesuffix("/v1")

    def stats(self) -> dict[str, int]:
        return json.loads(NO_PROXY.open(f"{self.root}/stats", timeout=10).read())

    def reset(self) -> None:
        NO_PROXY.open(
            urllib.request.Request(f"{self.root}/reset", data=b"", method="POST"), timeout=10
        ).read()


class Bench:
    def __init__(self, work: Path, stub: Stub) -> None:
        self.work = work
        self.stub = stub
        self.prefect_home = Path(tempfile.mkdtemp(prefix="prefect-home-", dir=work))  # fresh per invocation
        self.env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
        self.env.update(RLAIF_PROGRESS="0", HF_HUB_OFFLINE="1", PREFECT_HOME=str(self.prefect_home))
        self.env.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")
        self.env.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
        self.runs: dict[tuple[str, int], dict[str, Any]] = {}  # (runner, N) -> the uninterrupted run

    def recipe(self, n: int, runner: str = "threads") -> Path:
        prompts = self.work / f"prompts-{n}.jsonl"
        if not prompts.exists():
            st = write_prompts(prompts, n)
            print(f"# {n} prompts: mean {st['mean']:.0f} chars, median {st['median']:.0f}, "
                  f"{st['long_share']:.1%} >= 2,000, max {st['max']}", flush=True)  # fmt: skip
        path = self.work / f"recipe-{n}-{runner}.yaml"
        path.write_text(recipe_yaml(prompts, self.stub.base_url, runner))
        return path

    def start(self, recipe: Path, out: Path, log: Path) -> subprocess.Popen:
        cmd = [str(RLAIF), "run", str(recipe), "--out", str(out)]
        with log.open("ab") as f:
            proc = subprocess.Popen(cmd, cwd=ROOT, env=self.env, stdout=f, stderr=subprocess.STDOUT,
                                    stdin=subprocess.DEVNULL, start_new_session=True)  # fmt: skip
        proc.group = True  # type: ignore[attr-defined]
        CHILDREN.append(proc)
        return proc

    def finish(self, proc: subprocess.Popen, n: int, log: Path, t0: float) -> float:
        try:
            rc = proc.wait(timeout=max(1.0, timeout_for(n) - (time.monotonic() - t0)))
        except subprocess.TimeoutExpired:
            kill_tree(proc)
            CHILDREN.remove(proc)
            raise RuntimeError(
                f"rlaif run of {n} prompts passed {timeout_for(n):.0f} s; killed (log {log})"
            ) from None
        kill_tree(proc)  # leftovers of a finished run (a server that outlived it), if any
        CHILDREN.remove(proc)  # only now: on Ctrl-C/SIGTERM above, cleanup() still finds it
        if rc != 0:
            tail = [line[:300] for line in log.read_text(errors="replace").splitlines()[-5:]]
            raise RuntimeError(f"rlaif run of {n} prompts exited {rc} (log {log}):\n  " + "\n  ".join(tail))
        return time.monotonic() - t0

    def run(self, n: int, out: Path, runner: str = "threads", fresh: bool = True) -> dict[str, Any]:
        """One complete `rlaif run` (`fresh`: in an empty out dir, stub counters zeroed); returns wall
        time, stub counts, summary.json's engine figures and the datasets' row counts."""
        recipe = self.recipe(n, runner)
        log = out.with_name(out.name + ".log")
        if fresh:
            shutil.rmtree(out, ignore_errors=True)
            log.unlink(missing_ok=True)
            self.stub.reset()
        before = self.stub.stats()
        t0 = time.monotonic()
        wall = self.finish(self.start(recipe, out, log), n, log, t0)
        after = self.stub.stats()
        summary = json.loads((out / "summary.json").read_text())
        counts = row_counts(out)
        return {"n": n, "out": out, "wall_s": wall, "engine": summary.get("engine", {}),
                "ledger": (summary.get("build") or {}).get("ledger"),
                "stub_received": after["received"] - before["received"],
                "resent": after["resent"] - before["resent"], "counts": counts,
                "pairs": counts["train_prefs"] + counts["test_prefs"]}  # fmt: skip

    def uninterrupted(self, n: int, runner: str = "threads") -> dict[str, Any]:
        if (runner, n) not in self.runs:
            self.runs[(runner, n)] = self.run(n, self.work / f"run-{runner}-{n}", runner)
        return self.runs[(runner, n)]


def git_rev() -> str:
    try:
        rev = subprocess.run(["git", "rev-parse", "--short", "HEAD"], cwd=ROOT, capture_output=True,
                             text=True, timeout=10).stdout.strip()  # fmt: skip
        dirty = subprocess.run(["git", "status", "--porcelain", "--untracked-files=no"], cwd=ROOT,
                               capture_output=True, text=True, timeout=10).stdout.strip()  # fmt: skip
    except (OSError, subprocess.TimeoutExpired):
        return "?"
    return rev + ("+dirty" if dirty else "")


def fmt(x: Any, nd: int = 1) -> str:
    return "None" if x is None else f"{x:.{nd}f}" if isinstance(x, float) else str(x)


def size_line(r: dict[str, Any]) -> str:
    e = r["engine"]
    req = e.get("requests", 0)
    line = (f"N={r['n']} requests={req} req/s(end-to-end, process wall)={req / r['wall_s']:.1f} "
            f"req/s(engine)={fmt(e.get('requests_per_s'))} peak_rss_mb={fmt(e.get('peak_rss_mb'))} "
            f"task_runs={e.get('task_runs')} first_judged_s={fmt(e.get('first_judged_s'), 2)} "
            f"uf_rows={r['counts']['ultrafeedback']} pairs={r['pairs']}")  # fmt: skip
    if r["stub_received"] != req:
        line += f"  (stub received {r['stub_received']})"
    if led := r.get("ledger"):  # the build checked it (a run whose ledger does not close fails)
        acc = [led["prompts"], led["samples"], *led["pairs"].values(), led["sft"]]
        closed = all(a["given"] == a["kept"] + sum(a["dropped"].values()) for a in acc)
        line += (f"\n  ledger closes={closed}: prompts {led['prompts']['given']} -> {led['prompts']['kept']} "
                 f"{led['prompts']['dropped'] or ''}, samples {led['samples']['given']} -> {led['samples']['kept']}, "
                 + ", ".join(f"pairs({o}) {a['given']} -> {a['kept']} {a['dropped'] or ''}"
                             for o, a in led["pairs"].items() if a["given"]))  # fmt: skip
    return line


def resume(b: Bench, n: int, kill_at: float) -> None:
    out = b.work / f"resume-{n}"
    recipe = b.recipe(n)
    log = out.with_name(out.name + ".log")
    shutil.rmtree(out, ignore_errors=True)
    log.unlink(missing_ok=True)
    half = int(n * REQUESTS_PER_PROMPT * kill_at)
    b.stub.reset()
    t0 = time.monotonic()
    proc = b.start(recipe, out, log)
    before: dict[str, int] | None = None  # the stub's counts at the last poll before the kill
    while proc.poll() is None and time.monotonic() - t0 < timeout_for(n):
        st = b.stub.stats()
        if st["answered"] >= half:
            kill_tree(proc)
            before = st
            break
        time.sleep(0.05)
    kill_tree(proc)
    CHILDREN.remove(proc)
    if before is None:
        raise RuntimeError(f"resume: rlaif run ended (rc {proc.returncode}) before {half} answered requests")
    time.sleep(0.5)
    settled = b.stub.stats()
    journalled = sum(f.read_bytes().count(b"\n") for f in out.glob("shards/*/journal.jsonl"))
    print(f"# killed -9 after {time.monotonic() - t0:.1f}s; at the last poll the stub had received "
          f"{before['received']}, answered {before['answered']} ({before['received'] - before['answered']} "
          f"in flight); in all it received {settled['received']}, the journals hold {journalled} "
          f"(sent but not journalled: {settled['received'] - journalled}); re-sent within the interrupted "
          f"run {settled['resent']}", flush=True)  # fmt: skip
    r = b.run(n, out, fresh=False)
    print(f"# resumed run: {r['engine'].get('requests')} requests sent in {r['wall_s']:.1f}s "
          f"(stub received {r['stub_received']}); interrupted + resumed = "
          f"{settled['received'] + r['stub_received']} of {n * REQUESTS_PER_PROMPT}", flush=True)  # fmt: skip
    print(f"re-sent requests: {r['resent']} (requests in flight at the kill ≤ {CONCURRENCY} × processes)")
    ref = b.uninterrupted(n)
    same, counts = compare_runs(out, ref["out"])
    print(f"resumed == uninterrupted: {same} ({counts})", flush=True)


def rerun(b: Bench, sizes: list[int]) -> None:
    cands = [n for n in sizes if n <= 16384]
    if not cands:
        print("re-run of finished N: skipped (no N <= 16384 in --sizes)")
        return
    n = max(cands)
    first = b.uninterrupted(n)
    r = b.run(n, first["out"], fresh=False)
    print(f"re-run of finished {n}: requests sent={r['stub_received']} time={r['wall_s']:.1f}s = "
          f"{100 * r['wall_s'] / first['wall_s']:.1f}% of first run ({first['wall_s']:.1f}s)", flush=True)  # fmt: skip


def dask(b: Bench, n: int) -> None:
    r = b.run(n, b.work / f"run-dask-{n}", "dask")
    print(size_line(r).replace(f"N={n} ", f"N={n} (dask) "), flush=True)
    ref = b.uninterrupted(n)
    same, counts = compare_runs(r["out"], ref["out"])
    print(f"dask(2 processes) == threads: {same} ({counts})", flush=True)
    if not same:
        loose, _ = compare_runs(r["out"], ref["out"], ("provenance.created_at", "provenance.recipe_sha256"))
        print(f"# ... ignoring provenance.recipe_sha256 too (the recipes differ by task_runner): {loose}")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sizes", default="1024,16384,65536", help="comma-separated prompt counts")
    ap.add_argument("--resume", type=int, default=16384, metavar="N", help="kill -9 / resume check (0: off)")
    ap.add_argument(
        "--kill-at",
        type=float,
        default=0.5,
        metavar="F",
        help="--resume kills once the stub answered this fraction of N*20 requests",
    )
    ap.add_argument("--rerun", action="store_true", help="re-run the finished largest N <= 16384")
    ap.add_argument(
        "--dask", type=int, default=0, metavar="N", help="Dask (2 worker processes) check (0: off)"
    )
    ap.add_argument("--latency-ms", type=float, default=20.0, help="the stub's fixed latency")
    ap.add_argument("--work", help="work folder (default: a temp folder)")
    ap.add_argument("--keep", action="store_true", help="keep the work folder")
    args = ap.parse_args()
    sizes = [int(s) for s in args.sizes.split(",") if s.strip()]
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="rlaif-scale-"))
    work.mkdir(parents=True, exist_ok=True)
    atexit.register(cleanup)
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    try:
        stub = Stub(args.latency_ms)
        b = Bench(work, stub)
        print(f"# rlaif {git_rev()}, stub {stub.base_url} ({args.latency_ms:.0f} ms), work {work}, "
              f"{os.cpu_count()} cores", flush=True)  # fmt: skip
        for n in sizes:
            print(size_line(b.uninterrupted(n)), flush=True)
        done = sorted(n for _, n in b.runs)
        if len(done) > 1:
            lo, hi = b.runs[("threads", done[0])], b.runs[("threads", done[-1])]
            ratio = hi["engine"]["peak_rss_mb"] / lo["engine"]["peak_rss_mb"]
            print(f"rss ratio {done[-1]}/{done[0]}: {ratio:.2f}", flush=True)
        if args.rerun:
            rerun(b, sizes)
        if args.resume:
            resume(b, args.resume, args.kill_at)
        if args.dask:
            dask(b, args.dask)
    except RuntimeError as exc:
        print(f"scale bench: error: {exc}", file=sys.stderr)
        return 1
    finally:
        cleanup()
        if not args.keep and not args.work:
            shutil.rmtree(work, ignore_errors=True)
        elif args.keep:
            print(f"# work files kept in {work}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
