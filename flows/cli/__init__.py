"""The `rlaif` command line: serve, generate, run, estimate, iterate, judge-eval, constitution, review, push, train,
eval-policy, schedule.

Every error a user can cause prints one line (`rlaif: error: ...`) and exits with code 2; a failed
judge gate exits 3, a reached budget 4 (both resumable).
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading

from flows.cli import constitution, estimate, iterate, judge, push, review, run, schedule, serve, train
from serving.errors import RlaifError

__all__ = ["build_parser", "entry", "main"]

# One module per command group, in the order `rlaif --help` lists their commands.
COMMAND_GROUPS = (serve, run, estimate, iterate, judge, constitution, review, push, train, schedule)


def _quiet_env() -> None:
    os.environ.setdefault("HF_HUB_OFFLINE", "1")
    os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
    os.environ.setdefault("PREFECT_LOGGING_LEVEL", "WARNING")
    os.environ.setdefault("PREFECT_SERVER_ANALYTICS_ENABLED", "false")
    # the temporary Prefect server needs more than the default 20 s on a busy 2-core machine
    os.environ.setdefault("PREFECT_SERVER_EPHEMERAL_STARTUP_TIMEOUT_SECONDS", "120")


def _quiet_prefect_console() -> None:
    """Failed tasks reach the user as one `rlaif: error:` line, not Prefect's console tracebacks.
    Logs still go to the Prefect API (UI); RLAIF_VERBOSE=1 keeps the console output."""
    if os.environ.get("RLAIF_VERBOSE", "").lower() in ("1", "true", "yes"):
        return
    import logging

    from prefect.logging.configuration import setup_logging

    setup_logging()
    for name in ("", "prefect", "prefect._internal"):  # Prefect's console handlers sit on the root logger
        for handler in logging.getLogger(name).handlers:
            if type(handler).__name__ in ("PrefectConsoleHandler", "_SafeStreamHandler"):
                handler.setLevel(logging.CRITICAL)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rlaif",
        description="Preference data with AI feedback: a vLLM policy writes completions, LLM judges "
        "rate and compare them, constitutions drive critique-and-revision, and the result is a "
        "Hugging Face dataset with TRL-ready chosen/rejected pairs.",
        epilog="examples:\n"
        "  rlaif run recipes/demo.yaml                  # the whole pipeline on the bundled model\n"
        "  rlaif run recipes/demo.yaml --limit 4 --out runs/try\n"
        "  rlaif constitution check constitutions/*.yaml\n"
        "  rlaif train dpo --dataset runs/demo --max-steps 50\n"
        "  rlaif iterate recipes/iterate-demo.yaml --rounds 2   # on-policy rounds\n"
        "  rlaif schedule recipes/demo.yaml --cron '0 2 * * *'\n\n"
        "Errors print one line (`rlaif: error: ...`) and exit 2 (a failed judge gate: 3, a reached\n"
        "budget: 4); re-running a command resumes it.",
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    sub = parser.add_subparsers(dest="command", required=True)
    for group in COMMAND_GROUPS:
        group.add_commands(sub)
    return parser


def _interrupt(*_: object) -> None:
    """Ctrl-C and `kill` unwind the same way: requests in flight are cancelled (never journalled),
    local vLLM servers are stopped, exit 130."""
    shared = sys.modules.get("serving.shared")  # not imported yet: nothing is in flight
    if shared is not None:
        shared.cancel_in_flight()
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    _quiet_env()
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, _interrupt)
    if "serving.shared" in sys.modules:  # a new command in the same process starts uninterrupted
        sys.modules["serving.shared"].clear_interrupt()
    parser = build_parser()
    args = parser.parse_args(argv)
    if getattr(args, "uses_prefect", True):  # `review` and `push` never start a flow: no Prefect import
        _quiet_prefect_console()
    try:
        return int(args.fn(args) or 0)
    except RlaifError as exc:
        print(f"rlaif: {exc.label}: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("rlaif: interrupted; finished shards are kept, re-run the same command to resume",
              file=sys.stderr)  # fmt: skip
        return 130


def entry() -> None:
    """The `rlaif` executable: `main`, then a quiet exit. A command that trained or served in-process has
    loaded triton, whose nanobind bindings print ~30 lines of "leaked instance/type/function" while the
    interpreter shuts down, after the command's own last line. So once its output is flushed and the
    atexit handlers have run (Prefect's and ours stop what they started), the process exits without
    that teardown. Without triton loaded it exits the normal way."""
    code = main()
    if "triton" not in sys.modules:
        sys.exit(code)
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            stream.flush()
        except (OSError, ValueError):
            pass
    os._exit(code)
