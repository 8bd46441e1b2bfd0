"""Turn a recipe's `ServedModel` into live endpoints: start/reuse the local vLLM, or check remote ones."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import httpx

from flows.recipe import ServedModel
from serving.endpoint import Endpoint
from serving.errors import EndpointError
from serving.models import model_identity
from serving.vllm import VllmServer


def check_endpoint(ep: Endpoint, timeout: float = 10.0) -> None:
    """Fail fast, naming the URL, when an endpoint does not answer `GET /models`."""
    headers = {}
    key = ep.api_key()
    if key:
        headers["Authorization"] = f"Bearer {key}"
    url = f"{ep.base_url.rstrip('/')}/models"
    try:
        resp = httpx.get(url, headers=headers, timeout=timeout)
    except httpx.HTTPError as exc:
        raise EndpointError(
            f"endpoint {ep.base_url} is unreachable ({type(exc).__name__}): is the server up? "
            "check base_url in the recipe"
        ) from None
    if resp.status_code in (401, 403):
        raise EndpointError(f"endpoint {ep.base_url} refused the API key (HTTP {resp.status_code}); "
                            f"check {ep.api_key_env or 'api_key_env'}")  # fmt: skip


@contextmanager
def live_endpoints(*specs: ServedModel) -> Iterator[list[list[Endpoint]]]:
    """Endpoints for each spec; local models share one server per (model, port).

    A model is told apart by its folder (`model_identity`), not its spelling nor its basename: `./m` and
    `/abs/m` share one server, two folders both named `m` need two ports.
    """
    servers: dict[tuple[str, int], VllmServer] = {}
    with ExitStack() as stack:
        out = []
        for spec in specs:
            if spec.is_local:
                key = (model_identity(spec.model), spec.port)
                if key not in servers:
                    other = next((m for (m, p) in servers if p == spec.port), None)
                    if other is not None:
                        raise EndpointError(
                            f"two different local models on port {spec.port} ({other} and {key[0]}): "
                            "give the judge its own `port:` in the recipe"
                        )
                    server = VllmServer(spec.model, port=spec.port, max_model_len=spec.max_model_len,
                                        extra_args=["--trust-remote-code"] if spec.trust_remote_code else None,
                                        name=spec.served_as)  # fmt: skip
                    servers[key] = stack.enter_context(server)
            else:
                for ep in spec.endpoint_list():
                    check_endpoint(ep)
            out.append(spec.endpoint_list())
        yield out
