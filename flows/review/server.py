"""The review page's web server (Starlette, run by uvicorn): the page, and a small JSON API over `RunIndex`.

Pages of pairs are cut on the server; the browser never holds the dataset. Decisions are appended to
RUN/review/decisions.jsonl and never edit the datasets.
"""

from __future__ import annotations

import errno
import socket
import threading
from pathlib import Path
from typing import Any

import numpy as np
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.trustedhost import TrustedHostMiddleware
from starlette.requests import Request
from starlette.responses import FileResponse, JSONResponse, Response
from starlette.routing import Route

from flows.dataset.decisions import Decision, PairSnapshot, append_decision
from flows.review.index import ALL_FLAGS, SORTS, Query, RunIndex
from flows.review.overview import overview
from serving.errors import ConfigError, DataError

PAGE = Path(__file__).with_name("page.html")


def make_app(ix: RunIndex, reviewer: str | None = None, host: str = "127.0.0.1") -> Starlette:
    lock = threading.Lock()

    def bad(msg: str, status: int = 400) -> JSONResponse:
        return JSONResponse({"error": msg}, status_code=status)

    async def page(_: Request) -> Response:
        return FileResponse(PAGE, media_type="text/html")

    def meta(_: Request) -> JSONResponse:
        return JSONResponse({"run": str(ix.run), "pairs": ix.n, "flags": list(ALL_FLAGS), "sorts": list(SORTS),
                             "origins": [o for o in ix.origins if o], "judges": [j for j in ix.judges if j],
                             "principles": [p for p in ix.principles if p], "splits": [s for s in ix.splits if s],
                             "decisions_file": str(ix.run / "review" / "decisions.jsonl")})  # fmt: skip

    def pairs(request: Request) -> JSONResponse:
        params = {k: v for k, v in request.query_params.items() if v != ""}
        try:
            query = Query.model_validate(params)
            ks, total = ix.select(query)
        except (ValidationError, DataError) as exc:
            return bad(str(exc).splitlines()[0])
        return JSONResponse({"total": total, "offset": query.offset, "rows": ix.rows(ks)})

    def one(request: Request) -> JSONResponse:
        found = ix.pair(request.path_params["pair_id"])
        return JSONResponse(found) if found else bad("no such pair in this run", 404)

    def stats(_: Request) -> JSONResponse:
        return JSONResponse(overview(ix))

    async def decide(request: Request) -> JSONResponse:
        if request.headers.get("content-type", "").split(";")[0].strip() != "application/json":
            # a cross-site form can post text/plain without asking first; JSON needs a CORS preflight,
            # which this server never grants: only the page itself can record a decision
            return bad("decisions are posted as application/json", 415)
        try:
            body: dict[str, Any] = await request.json()
            d = Decision.model_validate({k: body.get(k) for k in ("pair_id", "decision", "note")})
        except (ValueError, ValidationError) as exc:
            return bad(
                f"a decision is {{pair_id, decision: accept|flip|tie|drop, note?}}: {str(exc).splitlines()[0]}"
            )
        k = ix.row_of(d.pair_id)
        if k is None:
            return bad("no such pair in this run", 404)
        r = ix.rows(np.array([k]))[0]  # the judges' order: what the decision is about
        snap = PairSnapshot(prompt=r["prompt"], chosen=r["chosen"], rejected=r["rejected"], origin=r["origin"],
                            judge=r["judge"], principle_id=r["principle_id"])  # fmt: skip
        with lock:
            saved = append_decision(ix.run, d.model_copy(update={"pair": snap, "reviewer": reviewer}))
            ix.decisions.pop(d.pair_id, None)
            ix.decisions[d.pair_id] = saved
        return JSONResponse(saved.model_dump(exclude={"pair"}, exclude_none=True))

    # a page elsewhere whose name resolves to this machine (DNS rebinding) must not reach the API: only
    # requests addressed to the bound host are answered (any, when the user binds all interfaces)
    hosts = ["*"] if host in ("0.0.0.0", "::") else sorted({host, "127.0.0.1", "localhost", "::1"})
    return Starlette(middleware=[Middleware(TrustedHostMiddleware, allowed_hosts=hosts)], routes=[
        Route("/", page), Route("/api/meta", meta), Route("/api/pairs", pairs), Route("/api/pair/{pair_id}", one),
        Route("/api/overview", stats), Route("/api/decisions", decide, methods=["POST"]),
    ])  # fmt: skip


def check_port(host: str, port: int) -> None:
    """One line when the port cannot be had (in use, or not allowed), before anything starts."""
    with socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET) as s:
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError as exc:
            why = "is in use" if exc.errno == errno.EADDRINUSE else f"cannot be used ({exc.strerror})"
            raise ConfigError(f"--port {port} on {host} {why}: pass another --port") from None


def serve(ix: RunIndex, host: str = "127.0.0.1", port: int = 8790, reviewer: str | None = None) -> None:
    import uvicorn

    check_port(host, port)
    app = make_app(ix, reviewer, host)
    print(f"rlaif review: http://{host}:{port}/  ({ix.n} pairs, {len(ix.decisions)} decisions so far; "
          f"decisions go to {ix.run / 'review' / 'decisions.jsonl'}); Ctrl-C stops", flush=True)  # fmt: skip
    uvicorn.run(app, host=host, port=port, log_level="warning", access_log=False)
