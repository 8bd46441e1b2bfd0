"""`rlaif serve`: serve a model with vLLM in the foreground."""

from __future__ import annotations

import argparse
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from serving.vllm import VllmServer

    server = VllmServer(args.model, port=args.port, host=args.host)
    print(f"starting vLLM for {server.model_name} on {server.base_url} (log {server.log_path}) ...",
          file=sys.stderr)  # fmt: skip

    with server:
        if server.reused:
            print(f"{server.model_name} is already served at {server.base_url}; nothing to start")
            return 0
        print(f"serving {server.model_name} at {server.base_url} — Ctrl-C stops it", flush=True)
        try:
            while server.proc is None or server.proc.poll() is None:
                time.sleep(1)
        except KeyboardInterrupt:
            print("stopping", file=sys.stderr)
    return 0


def add_commands(sub: argparse._SubParsersAction) -> None:  # type: ignore[type-arg]
    p = sub.add_parser("serve", help="serve a model with vLLM on 127.0.0.1 (foreground)")
    p.add_argument("--model", default=None, help="model folder or name (default: bundled SmolLM2)")
    p.add_argument("--port", type=int, default=8765)
    p.add_argument("--host", default="127.0.0.1", help="bind address (default 127.0.0.1)")
    p.set_defaults(fn=cmd_serve)
