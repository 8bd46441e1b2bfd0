"""Estimate accuracy bench: `rlaif estimate` against what a stub-served run of N prompts really uses.

Starts the fast stub (bench/stub_server.py), writes N synthetic prompts and the scale bench's recipe
(bench/scale_data.py: generate n=4, max_tokens 128 + ultrafeedback + pairwise on the policy endpoint),
then, all into one run folder:

  1. the estimate with no history (every answer at max_tokens: the upper figure);
  2. a pilot `rlaif run --limit P` (default 64 prompts) and the estimate again (answer lengths observed
     in the pilot's journal; the full run then replays the pilot's answers);
  3. the full `rlaif run` (N prompts), whose summary.json `usage` is the actual figure;
  4. the estimate once more (answer lengths observed over the whole run).

The stub counts every request it receives: each estimate must add 0. Prints estimate/actual per stage
for prompt, completion and all tokens, and in total. The stub reports prompt tokens as characters/4,
which is also what the estimate counts with behind an endpoint; its answers are 300-600 characters of
prose (generation) or a JSON verdict/rating sized by the schema.

    .venv/bin/python bench/estimate_accuracy.py [--prompts 1024] [--pilot 64] [--work DIR] [--keep]
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import common  # noqa: F401 - puts the repository on sys.path
from scale_data import recipe_yaml, write_prompts
from stub_server import NO_PROXY, start_stub

ROOT = Path(__file__).resolve().parents[1]
RLAIF = ROOT / ".venv" / "bin" / "rlaif"


def estimate(recipe: Path, out: Path, dest: Path) -> dict[str, Any]:
    """`rlaif estimate RECIPE --out OUT --json DEST` in this process (through the command's own module)."""
    from flows.cli import estimate as estimate_cli

    parser = argparse.ArgumentParser()
    estimate_cli.add_commands(parser.add_subparsers())
    args = parser.parse_args(["estimate", str(recipe), "--out", str(out), "--json", str(dest)])
    with contextlib.redirect_stdout(io.StringIO()):  # the table: the figures come from the JSON
        code = args.fn(args)
    if code != 0:
        raise RuntimeError("rlaif estimate failed")
    return json.loads(dest.read_text())


def run(recipe: Path, out: Path, log: Path, env: dict[str, str], limit: int | None = None) -> None:
    cmd = [str(RLAIF), "run", str(recipe), "--out", str(out), *(["--limit", str(limit)] if limit else [])]
    with log.open("ab") as f:
        rc = subprocess.run(
            cmd, cwd=ROOT, env=env, stdout=f, stderr=subprocess.STDOUT, timeout=3600
        ).returncode
    if rc != 0:
        tail = log.read_text(errors="replace").splitlines()[-5:]
        raise RuntimeError(f"rlaif run exited {rc} (log {log}):\n  " + "\n  ".join(tail))


def ratios(est: dict[str, Any], usage: dict[str, dict[str, Any]], upper: bool = False) -> dict[str, tuple]:
    """stage -> (prompt, completion, all tokens) estimate/actual; `upper`: the at-max_tokens figures."""
    suffix = "_max" if upper else ""
    rows = {s["stage"]: s for s in est["stages"]}
    out: dict[str, tuple] = {}
    tot_e = [0, 0]
    tot_a = [0, 0]
    for stage, u in usage.items():
        e = rows.get(stage)
        if e is None or not (u["prompt_tokens"] or u["completion_tokens"]):
            continue
        ep, ec = e["prompt_tokens" + suffix], e["completion_tokens" + suffix]
        ap, ac = u["prompt_tokens"], u["completion_tokens"]
        out[stage] = (ep / ap, ec / ac, (ep + ec) / (ap + ac), e["requests"] == u["requests"] + u["replayed"])
        tot_e = [tot_e[0] + ep, tot_e[1] + ec]
        tot_a = [tot_a[0] + ap, tot_a[1] + ac]
    out["total"] = (tot_e[0] / tot_a[0], tot_e[1] / tot_a[1], sum(tot_e) / sum(tot_a), True)
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--prompts", type=int, default=1024, help="prompts of the full run")
    ap.add_argument("--pilot", type=int, default=64, help="prompts of the pilot run (0: no pilot)")
    ap.add_argument("--latency-ms", type=float, default=20.0)
    ap.add_argument("--work", help="work folder (default: a temp folder, removed unless --keep)")
    ap.add_argument("--keep", action="store_true")
    args = ap.parse_args()
    work = Path(args.work).resolve() if args.work else Path(tempfile.mkdtemp(prefix="rlaif-estimate-"))
    work.mkdir(parents=True, exist_ok=True)
    stub = start_stub(0, args.latency_ms)
    root = stub.base_url.removesuffix("/v1")  # type: ignore[attr-defined]

    def received() -> int:
        return int(json.loads(NO_PROXY.open(f"{root}/stats", timeout=10).read())["received"])

    def unchanged(before: int) -> None:
        if received() != before:
            raise RuntimeError(f"the estimate sent {received() - before} requests")

    env = {k: v for k, v in os.environ.items() if k not in ("PREFECT_API_URL", "PREFECT_PROFILE")}
    env.update(RLAIF_PROGRESS="0", RLAIF_PROGRESS_EVERY="0", HF_HUB_OFFLINE="1",
               PREFECT_HOME=tempfile.mkdtemp(prefix="prefect-home-", dir=work))  # fmt: skip
    try:
        prompts = work / f"prompts-{args.prompts}.jsonl"
        st = write_prompts(prompts, args.prompts)
        recipe = work / "recipe.yaml"
        recipe.write_text(recipe_yaml(prompts, stub.base_url))  # type: ignore[attr-defined]
        out, log = work / "run", work / "run.log"
        shutil.rmtree(out, ignore_errors=True)
        print(f"# {args.prompts} prompts: mean {st['mean']:.0f} chars, {st['long_share']:.1%} >= 2,000; "
              f"stub {stub.base_url}, work {work}", flush=True)  # type: ignore[attr-defined]  # fmt: skip
        estimates: dict[str, dict[str, Any]] = {}
        sent = received()
        estimates["no history (max_tokens)"] = estimate(recipe, out, work / "est-0.json")
        unchanged(sent)
        if args.pilot:
            run(recipe, out, log, env, limit=args.pilot)
            sent = received()
            estimates[f"after a {args.pilot}-prompt pilot"] = estimate(recipe, out, work / "est-pilot.json")
            unchanged(sent)
        run(recipe, out, log, env)
        usage = json.loads((out / "summary.json").read_text())["usage"]
        sent = received()
        estimates["after the full run"] = estimate(recipe, out, work / "est-after.json")
        unchanged(sent)
        print("requests sent by the estimates: 0 (the stub's count did not move)")
        print("actual (summary.json usage): " + ", ".join(
            f"{s} {u['prompt_tokens']:,} prompt + {u['completion_tokens']:,} completion"
            for s, u in usage.items()))  # fmt: skip
        for name, est in estimates.items():
            rows = ratios(est, usage, upper=est["history"] is None)
            what = "at max_tokens" if est["history"] is None else "observed mean"
            print(f"\nestimate {name} [{what}]: estimate/actual  prompt  completion  all tokens  requests")
            for stage, (p, c, a, same) in rows.items():
                print(f"  {stage:<22} {p:6.3f}  {c:10.3f}  {a:10.3f}  {'equal' if same else 'DIFFER'}")
            if est["history"] is not None:
                up = ratios(est, usage, upper=True)["total"]
                print(f"  (its upper figure, every answer at max_tokens: total {up[2]:.3f})")
    finally:
        stub.terminate()
        stub.wait(timeout=10)
        if args.keep or args.work:
            print(f"# work files in {work}")
        else:
            shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
