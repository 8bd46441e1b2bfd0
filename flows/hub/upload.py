"""`rlaif push`: a finished run folder to a Hugging Face dataset repo, in one commit.

`plan_push` checks the run and lists what goes up (no network); `push` creates the repo and commits it.
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path, PurePosixPath
from typing import Any

from pydantic import BaseModel

from serving.errors import ConfigError, DataError, EndpointError

CARD = "README.md"
# The human review log (flows/dataset/decisions.py): who decided what about which pair; part of the data.
DECISIONS = "review/decisions.jsonl"
# Left out on purpose: summary.json and build.json hold absolute local paths (the run folder,
# constitution files), endpoint URLs (internal host names) and this machine's timings; the card
# already carries the figures a reader needs. Shards, journals, prompts and `datasets` folders are
# working state, and the Parquet copies hold the same rows as the `datasets` folders.
_REPO_PART = r"[A-Za-z0-9](?:[A-Za-z0-9._-]{0,94}[A-Za-z0-9])?"
REPO_ID = re.compile(rf"^{_REPO_PART}/{_REPO_PART}$")
_HEADER = re.compile(r"\A---[ \t]*\r?\n(.*?)^---[ \t]*$", re.DOTALL | re.MULTILINE)
NO_TOKEN = "no Hugging Face token: set HF_TOKEN (a token with write access) or run `hf auth login`"


class PlannedFile(BaseModel):
    """One file of the commit."""

    local: Path
    path_in_repo: str
    size: int  # bytes


class PushPlan(BaseModel):
    """What `push` uploads from a run folder, checked before any request."""

    run: Path
    name: str  # the run folder's name: the commit message says it
    files: list[PlannedFile]
    card_header: str  # the card's YAML header, between the `---` lines
    configs: list[str]  # the `configs:` names, e.g. ["ultrafeedback", "binarized"]

    @property
    def total_bytes(self) -> int:
        return sum(f.size for f in self.files)


class PushResult(BaseModel):
    """What `push` did (or, with `dry_run`, would do)."""

    plan: PushPlan
    repo_id: str
    private: bool
    revision: str
    dry_run: bool
    uploaded: bool
    endpoint: str  # the Hub: HF_ENDPOINT, else https://huggingface.co
    repo_url: str | None = None
    commit_url: str | None = None
    commit_oid: str | None = None


def check_repo_id(repo_id: str) -> str:
    """`ORG/NAME` as the Hub spells it, or `ConfigError`."""
    if not REPO_ID.match(repo_id) or ".." in repo_id or "--" in repo_id or repo_id.endswith(".git"):
        raise ConfigError(
            f"--repo {repo_id!r}: expected ORG/NAME (letters, digits, '-', '_', '.'; no '--' or '..'), "
            "e.g. --repo my-org/my-preference-data"
        )
    return repo_id


def card_header(card: Path) -> tuple[str, dict[str, Any]]:
    """The card's YAML header (text between the `---` lines) and what it parses to."""
    import yaml

    match = _HEADER.match(card.read_text(encoding="utf-8"))
    if match is None:
        raise DataError(f"{card}: no YAML header (a first line `---`, the metadata, a closing `---`)")
    header = match.group(1)
    try:
        meta = yaml.safe_load(header)
    except yaml.YAMLError as exc:
        why = " ".join(str(exc).split())
        raise DataError(f"{card}: the YAML header does not parse: {why}") from None
    if not isinstance(meta, dict):
        raise DataError(f"{card}: the YAML header is not a mapping")
    return header, meta


def _config_paths(card: Path, meta: dict[str, Any]) -> dict[str, list[str]]:
    """config name -> the paths its `data_files` name (strings, lists, or {split, path} items)."""
    configs = meta.get("configs")
    if not isinstance(configs, list) or not configs:
        raise DataError(f"{card}: the YAML header has no `configs:` list (`rlaif run` writes one; re-run it)")
    out: dict[str, list[str]] = {}
    for k, cfg in enumerate(configs):
        name = cfg.get("config_name") if isinstance(cfg, dict) else None
        files = cfg.get("data_files") if isinstance(cfg, dict) else None
        if not isinstance(name, str) or not name or files is None:
            raise DataError(f"{card}: configs[{k}] needs `config_name` and `data_files`")
        paths: list[str] = []
        for item in files if isinstance(files, list) else [files]:
            value = item.get("path") if isinstance(item, dict) else item
            values = value if isinstance(value, list) else [value]
            if not values or not all(isinstance(v, str) and v for v in values):
                raise DataError(f"{card}: configs[{k}] ({name}): a data_files entry without a path")
            paths += values
        out[name] = paths
    return out


def _files(run: Path) -> list[PlannedFile]:
    found = [
        run / CARD,
        *sorted((run / "parquet").rglob("*.parquet")),
        *sorted((run / "report").glob("*.png")),
    ]
    if (run / DECISIONS).is_file():
        found.append(run / DECISIONS)
    return [PlannedFile(local=p, path_in_repo=p.relative_to(run).as_posix(), size=p.stat().st_size)
            for p in found if p.is_file()]  # fmt: skip


def plan_push(run: Path) -> PushPlan:
    """Check `run` is a finished run whose card's `configs:` name files that go up; list the upload."""
    run = Path(run)
    if not run.is_dir():
        what = "not a folder" if run.exists() else "no such folder"
        raise DataError(f"{run}: {what}; give a run folder (the --out of `rlaif run`, e.g. runs/demo)")
    if not (run / "build.json").is_file():
        raise DataError(f"{run}: not a finished rlaif run (no build.json): run `rlaif run RECIPE` first")
    card = run / CARD
    if not card.is_file():
        raise DataError(f"{card}: no dataset card; re-run `rlaif run RECIPE` to write it")
    header, meta = card_header(card)
    files = _files(run)
    uploaded = {f.path_in_repo for f in files}
    configs = _config_paths(card, meta)
    for name, paths in configs.items():
        for path in paths:
            pure = PurePosixPath(path)
            if pure.is_absolute() or ".." in pure.parts:
                raise DataError(f"{card}: configs {name}: {path} is not a path inside the run folder")
            globbed = any(c in path for c in "*?[")
            matches = [p.relative_to(run).as_posix() for p in run.glob(path)] if globbed else [path]
            if not matches or (not globbed and not (run / path).is_file()):
                raise DataError(f"{card}: configs {name}: {path} does not exist in {run}")
            if missing := sorted(set(matches) - uploaded):
                raise DataError(f"{card}: configs {name}: {missing[0]} is not among the files pushed "
                                "(the card, parquet/**/*.parquet, report/*.png, review/decisions.jsonl)")  # fmt: skip
    return PushPlan(run=run, name=run.resolve().name, files=files, card_header=header, configs=list(configs))


@contextmanager
def _online() -> Iterator[None]:
    """Hub requests allowed for this block. The CLI sets HF_HUB_OFFLINE=1 for everything else;
    huggingface_hub 2.4 reads it once, at import, into `constants.HF_HUB_OFFLINE` and checks that
    per request, so setting the variable now would not do (it may have been imported already)."""
    from huggingface_hub import constants

    was = constants.HF_HUB_OFFLINE
    constants.HF_HUB_OFFLINE = False
    try:
        yield
    finally:
        constants.HF_HUB_OFFLINE = was


def _token() -> str:
    """HF_TOKEN, else the saved login (`hf auth login`): huggingface_hub's own lookup. Never shown."""
    from huggingface_hub import get_token

    try:
        token = get_token()
    except Exception as exc:  # e.g. HF_OIDC_RESOURCE set but no OIDC token to exchange
        raise ConfigError(f"Hugging Face token: {type(exc).__name__}: {str(exc).splitlines()[0]}") from None
    if not token:
        raise ConfigError(NO_TOKEN)
    return token


def _version() -> str | None:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("rlaif")
    except PackageNotFoundError:
        return None


def _why(exc: BaseException, endpoint: str, token: str) -> str:
    """One line for a failed request; the token never in it."""
    status = getattr(getattr(exc, "response", None), "status_code", None)
    server = getattr(exc, "server_message", None)  # what the Hub said, when it said something
    first = (
        " ".join(str(server).split())
        if server
        else (str(exc).strip().splitlines() or [type(exc).__name__])[0]
    )
    hint = {401: " (is the token valid?)", 403: " (does the token have write access to this namespace?)"}
    text = f"HTTP {status}: {first}{hint.get(status, '')}" if status else f"{endpoint}: {first}"
    return text.replace(token, "***") if token else text


def push(run: Path, repo_id: str, private: bool = False, revision: str = "main",
         dry_run: bool = False) -> PushResult:  # fmt: skip
    """Create the dataset repo `repo_id` (kept if it exists) and upload the plan in one commit on
    `revision`. Without `private` the Hub's default for the namespace holds. `dry_run`: no request."""
    check_repo_id(repo_id)
    if not revision.strip():
        raise ConfigError("--revision: empty; give a branch name (default main)")
    plan = plan_push(run)
    from huggingface_hub import constants  # reads HF_ENDPOINT, HF_HUB_OFFLINE...; makes no request

    endpoint = os.environ.get("HF_ENDPOINT", "").rstrip("/") or constants.ENDPOINT
    result = PushResult(plan=plan, repo_id=repo_id, private=private, revision=revision, dry_run=dry_run,
                        uploaded=False, endpoint=endpoint)  # fmt: skip
    if dry_run:
        return result
    with _online():
        from huggingface_hub import CommitOperationAdd, HfApi
        from huggingface_hub.errors import HfHubHTTPError

        try:
            from httpx2 import HTTPError as TransportError  # huggingface_hub 2.x speaks httpx2
        except ImportError:  # pragma: no cover
            from httpx import HTTPError as TransportError

        token = _token()
        api = HfApi(endpoint=endpoint, token=token, library_name="rlaif", library_version=_version())
        try:
            url = api.create_repo(
                repo_id, repo_type="dataset", private=True if private else None, exist_ok=True
            )
            operations = [CommitOperationAdd(path_in_repo=f.path_in_repo, path_or_fileobj=(
                hub_card(f.local.read_text(), repo_id).encode() if f.path_in_repo == CARD else str(f.local)))
                for f in plan.files]  # fmt: skip
            info = api.create_commit(repo_id, operations, commit_message=f"rlaif push: {plan.name}",
                                     repo_type="dataset", revision=revision)  # fmt: skip
        except (HfHubHTTPError, TransportError, OSError, ValueError, KeyError) as exc:  # KeyError: odd answer
            raise EndpointError(f"push to {repo_id}: {_why(exc, endpoint, token)}") from None
    return result.model_copy(update={"uploaded": True, "repo_url": str(url), "commit_url": info.commit_url,
                                     "commit_oid": info.oid})  # fmt: skip


_LOCAL_LOAD = re.compile(r"load_from_disk\('[^']*/(binarized|ultrafeedback)'\)")


def hub_card(text: str, repo_id: str) -> str:
    """The card as it reads on the Hub: its usage lines load the repo by name (`load_dataset`), not the
    local run folder; everything else, the `configs:` header included, is the card as built."""

    def by_name(m: re.Match[str]) -> str:
        return f"load_dataset('{repo_id}', '{m.group(1)}')" + (
            "" if m.group(1) == "binarized" else "['train']"
        )

    out = _LOCAL_LOAD.sub(by_name, text)
    return out.replace("from datasets import load_from_disk", "from datasets import load_dataset")
