"""`rlaif serve`: serve a model with vLLM in the foreground."""

from __future__ import annotations

import argparse
import sys


def cmd_serve(args: argparse.Namespace) -> int:
    import time

    from serving.lora import LoraServing
    from serving.vllm import VllmServer

    lora = LoraServing(max_rank=args.max_lora_rank, max_loras=args.max_loras) if args.enable_lora else None
    server = VllmServer(args.model, port=args.port, host=args.host, lora=lora)
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
    p.add_argument("--enable-lora", action="store_true",
                   help="take LoRA adapters at runtime (what `rlaif iterate` with `train: {lora: ...}` loads "
                   "into a running server); without it a LoRA round starts its own server")  # fmt: skip
    p.add_argument(
        "--max-lora-rank", type=int, default=16, help="with --enable-lora: the largest adapter rank"
    )
    p.add_argument("--max-loras", type=int, default=2, help="with --enable-lora: adapters held at once")
    p.set_defaults(fn=cmd_serve)
