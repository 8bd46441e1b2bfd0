"""LoRA adapters on a running vLLM: what an adapter folder is and its content hash, the server flags that
let a base-model server take adapters at runtime, and loading/unloading them (`/v1/load_lora_adapter`)."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import httpx
from pydantic import BaseModel, ConfigDict, Field

from serving.errors import EndpointError, ModelError
from serving.models import hash_files

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = ("adapter_model.safetensors", "adapter_model.bin")
VLLM_RANKS = (1, 8, 16, 32, 64, 128, 256, 320, 512)  # vLLM's accepted --max-lora-rank values
RUNTIME_ENV = "VLLM_ALLOW_RUNTIME_LORA_UPDATING"


def is_adapter_dir(path: str | Path) -> bool:
    return (Path(path).expanduser() / ADAPTER_CONFIG).is_file()


def adapter_config(folder: str | Path) -> dict:
    path = Path(folder).expanduser() / ADAPTER_CONFIG
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError) as exc:
        raise ModelError(f"{path}: not a readable LoRA adapter config ({exc})") from None


def adapter_sha256(folder: str | Path) -> str:
    """sha256 over an adapter's config (its base model's path left out) and weight bytes: the same trained
    adapter anywhere has the same hash, and a retrained one never keeps it."""
    path = Path(folder).expanduser().resolve()
    config = {k: v for k, v in adapter_config(path).items() if k != "base_model_name_or_path"}
    weights = [path / n for n in ADAPTER_WEIGHTS if (path / n).is_file()]
    if not weights:
        raise ModelError(
            f"LoRA adapter {path} has no {' or '.join(ADAPTER_WEIGHTS)}: is it an adapter folder?"
        )
    return hash_files(hashlib.sha256(json.dumps(config, sort_keys=True).encode() + b"\0"), weights)


def vllm_rank(r: int) -> int:
    """The smallest `--max-lora-rank` vLLM accepts that holds rank `r`."""
    for rank in VLLM_RANKS:
        if rank >= r:
            return rank
    raise ModelError(f"LoRA rank {r} is above vLLM's largest --max-lora-rank ({VLLM_RANKS[-1]})")


class LoraServing(BaseModel):
    """How a base-model server takes adapters: `--enable-lora` with room for `max_loras` adapters of rank up
    to `max_rank` in a batch, and runtime loading switched on."""

    model_config = ConfigDict(extra="forbid")

    max_rank: int = Field(default=16, ge=1, description="the largest adapter rank it will load")
    max_loras: int = Field(default=2, ge=1, description="adapters in one batch (and kept in memory)")

    def args(self) -> list[str]:
        n = str(self.max_loras)
        return ["--enable-lora", "--max-lora-rank", str(vllm_rank(self.max_rank)), "--max-loras", n,
                "--max-cpu-loras", n]  # fmt: skip

    def env(self) -> dict[str, str]:
        return {RUNTIME_ENV: "True"}


def _error(resp: httpx.Response) -> str:
    try:
        body = resp.json()
    except ValueError:
        return resp.text.strip().splitlines()[0][:200] if resp.text.strip() else f"HTTP {resp.status_code}"
    err = body.get("error") if isinstance(body, dict) else None
    if isinstance(err, dict):
        return str(err.get("message", err))[:300].replace("\n", " ")
    return str(body.get("detail", body) if isinstance(body, dict) else body)[:200]


def _no_runtime_loading(base_url: str) -> EndpointError:
    return EndpointError(f"{base_url} does not load LoRA adapters at runtime: start it with `rlaif serve "
                         f"--enable-lora` (or vLLM's --enable-lora and {RUNTIME_ENV}=True), or stop it so rlaif "
                         "starts its own")  # fmt: skip


def _post(base_url: str, route: str, body: dict) -> httpx.Response:
    url = f"{base_url.rstrip('/')}/{route}"
    try:
        return httpx.post(url, json=body, timeout=300)
    except httpx.HTTPError as exc:
        raise EndpointError(f"{url} is unreachable ({type(exc).__name__}): is the server up?") from None


def loaded_adapters(base_url: str) -> dict[str, str]:
    """Adapter name -> folder of every adapter the server has loaded (vLLM lists them with a `parent`)."""
    from serving.vllm import server_cards

    cards = server_cards(base_url) or []
    return {c["id"]: str(c.get("root") or "") for c in cards if c.get("parent")}


def _route_missing(resp: httpx.Response) -> bool:
    """A 404 from the router (no such route), not vLLM's own "adapter not found" error object."""
    if resp.status_code != 404:
        return False
    try:
        body = resp.json()
    except ValueError:
        return True
    return not (isinstance(body, dict) and isinstance(body.get("error"), dict))


def check_runtime_loading(base_url: str) -> None:
    """Fail with one line when the server has no runtime adapter routes (started without the env var)."""
    if _route_missing(_post(base_url, "unload_lora_adapter", {"lora_name": "rlaif-probe-never-loaded"})):
        raise _no_runtime_loading(base_url)


def load_adapter(base_url: str, name: str, path: str | Path) -> bool:
    """Make the server answer `name` with the adapter in `path`; False when it already did (same folder)."""
    folder = str(Path(path).expanduser().resolve())
    if not is_adapter_dir(folder):
        raise ModelError(f"{folder}: not a LoRA adapter folder (no {ADAPTER_CONFIG})")
    have = loaded_adapters(base_url)
    if name in have:
        if Path(have[name]).resolve() == Path(folder):
            return False
        unload_adapter(base_url, name)  # the same name for other weights: never answer from the old ones
    resp = _post(base_url, "load_lora_adapter", {"lora_name": name, "lora_path": folder})
    if _route_missing(resp):
        raise _no_runtime_loading(base_url)
    if resp.status_code != 200:
        raise EndpointError(f"{base_url}: loading LoRA adapter {name} from {folder} failed "
                            f"(HTTP {resp.status_code}): {_error(resp)}")  # fmt: skip
    return True


def unload_adapter(base_url: str, name: str) -> None:
    resp = _post(base_url, "unload_lora_adapter", {"lora_name": name})
    if _route_missing(resp):
        raise _no_runtime_loading(base_url)
    if resp.status_code not in (200, 404):  # 404: not loaded (any more)
        raise EndpointError(f"{base_url}: unloading LoRA adapter {name} failed (HTTP {resp.status_code}): "
                            f"{_error(resp)}")  # fmt: skip
