"""Hugging Face source: revision -> commit sha, pinned snapshot download, checksum verification.

The endpoint of a model is `endpoint` in models.yaml, else `HF_ENDPOINT` (mirrors such as olah or
hf-mirror.com, common for teams in mainland China), else the `mirror` the caller passes (Airflow: the host
of the model's Hugging Face Connection), else huggingface.co. It is passed to every call
rather than read from huggingface_hub's import-time constants, so one process can use several.

Works with huggingface_hub 1.x (worker image) and 2.x (Airflow image): only long-stable calls are used
(HfApi.model_info / list_repo_refs / list_repo_files / get_paths_info, snapshot_download).
The token is passed through and never logged or put into an error message.
"""

from __future__ import annotations

import json
import logging
import os
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmops.artefacts.manifest import SHA_RE
from llmops.config.schema import ModelSpec
from llmops.hashing import git_blob_sha1, sha256_file
from llmops.hub.errors import (
    ChecksumMismatchError,
    HubError,
    HubUnavailableError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from llmops.hub.policy import CONFIG_FILES, check_remote_code, plan_download

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PATHS_INFO_BATCH = 100


def hub_endpoint(spec: ModelSpec, mirror: str | None = None) -> str:
    """models.yaml `endpoint` > HF_ENDPOINT > `mirror` (the Connection's host) > huggingface.co."""
    return (spec.endpoint or os.environ.get("HF_ENDPOINT") or mirror or DEFAULT_ENDPOINT).rstrip("/")


def _api(endpoint: str, token: str | None):
    from huggingface_hub import HfApi

    # token=False stops huggingface_hub from falling back to a token stored on the machine
    return HfApi(endpoint=endpoint, token=token or False)


def _hub_call(what: str, endpoint: str, call):
    """Run a hub call, turning transport and server errors into a HubError without the request headers."""
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

    try:
        return call()
    except (RepositoryNotFoundError, HfRevisionNotFound):
        raise
    except Exception as exc:  # noqa: BLE001 - network stacks differ between huggingface_hub 1.x and 2.x
        status = getattr(getattr(exc, "response", None), "status_code", None)
        # A 4xx other than timeout / rate limit is an answer (forbidden, gated...): retrying repeats it.
        error = HubError if isinstance(status, int) and 400 <= status < 500 and status not in (408, 429) \
            else HubUnavailableError
        raise error(f"{what} failed against {endpoint}: {type(exc).__name__}: {str(exc).splitlines()[0]}; fix: "
                    "check the endpoint (models.yaml endpoint / HF_ENDPOINT) is reachable, then rerun") from None


def _known_refs(api, repo_id: str) -> list[str] | None:
    """Branch and tag names, or None when the repo itself does not exist."""
    from huggingface_hub.errors import EntryNotFoundError, RepositoryNotFoundError

    try:
        refs = api.list_repo_refs(repo_id)
    except (RepositoryNotFoundError, EntryNotFoundError):  # olah answers 404 for refs of an unknown repo
        return None
    return sorted({ref.name for ref in [*refs.branches, *refs.tags]})


def resolve_revision(spec: ModelSpec, token: str | None = None, mirror: str | None = None) -> str:
    """The 40-hex commit sha that `spec.revision` (branch, tag or sha) points to now."""
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

    endpoint = hub_endpoint(spec, mirror)
    api = _api(endpoint, token)
    try:
        info = _hub_call(f"resolving {spec.repo_id}@{spec.revision}", endpoint,
                         lambda: api.model_info(spec.repo_id, revision=spec.revision))
    except HfRevisionNotFound:
        raise RevisionNotFoundError(spec.repo_id, spec.revision, endpoint,
                                    _known_refs(api, spec.repo_id)) from None
    except RepositoryNotFoundError:
        # Mirrors (olah) answer an unknown revision like an unknown repo: the refs tell them apart.
        known = _hub_call(f"listing refs of {spec.repo_id}", endpoint, lambda: _known_refs(api, spec.repo_id))
        if known is None:
            raise RepoNotFoundError(spec.repo_id, endpoint) from None
        raise RevisionNotFoundError(spec.repo_id, spec.revision, endpoint, known) from None
    sha = getattr(info, "sha", None)
    if not sha or not SHA_RE.match(sha):
        raise HubError(f"{endpoint} returned no commit sha for {spec.repo_id}@{spec.revision} (got {sha!r}); fix: "
                       "use an endpoint that implements the Hugging Face API (model_info with revision)")
    log.info("resolved %s@%s to %s on %s", spec.repo_id, spec.revision, sha, endpoint)
    return sha


def download_snapshot(spec: ModelSpec, sha: str, dest: Path, token: str | None = None,
                      mirror: str | None = None) -> Path:
    """Download `spec.repo_id` at commit `sha` into `dest` under the weight policy, then verify every file.

    Idempotent: files already in `dest` at this sha are not fetched again, but are verified again.
    Raises WeightPolicyError before anything large is downloaded, ChecksumMismatchError (after removing
    the bad file) when bytes differ from the hub's metadata.
    """
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise HubError(f"{sha!r} is not a 40-hex commit sha; rule: downloads are pinned to a resolved commit; fix: "
                       "pass the sha from resolve_revision(), not a branch or tag")
    endpoint = hub_endpoint(spec, mirror)
    api = _api(endpoint, token)
    dest = Path(dest)
    started = time.monotonic()
    try:
        repo_files = _hub_call(f"listing {spec.repo_id}@{sha}", endpoint,
                               lambda: api.list_repo_files(spec.repo_id, revision=sha))
    except HfRevisionNotFound:
        raise RevisionNotFoundError(spec.repo_id, sha, endpoint, _known_refs(api, spec.repo_id)) from None
    except RepositoryNotFoundError:
        if _known_refs(api, spec.repo_id) is None:
            raise RepoNotFoundError(spec.repo_id, endpoint) from None
        raise RevisionNotFoundError(spec.repo_id, sha, endpoint, _known_refs(api, spec.repo_id)) from None
    plan = plan_download(spec, sha, repo_files)
    dest.mkdir(parents=True, exist_ok=True)
    common = {"repo_id": spec.repo_id, "revision": sha, "local_dir": dest, "endpoint": endpoint,
              "token": token or False}

    configs = [name for name in CONFIG_FILES if name in plan.files]
    if configs:  # small files first: refuse custom code before fetching gigabytes
        _hub_call(f"downloading {', '.join(configs)}", endpoint,
                  lambda: snapshot_download(allow_patterns=configs, **common))
        check_remote_code(spec, sha, {name: _read_json(dest / name) for name in configs})

    log.info("downloading %d files of %s@%s from %s", len(plan.files), spec.repo_id, sha, endpoint)
    _hub_call(f"downloading {spec.repo_id}@{sha}", endpoint,
              lambda: snapshot_download(allow_patterns=plan.allow_patterns, ignore_patterns=plan.ignore_patterns,
                                        max_workers=8, **common))
    _remove_stale(dest, set(plan.files))
    total = verify_snapshot(spec.repo_id, sha, dest, plan.files, api=api, endpoint=endpoint)
    log.info("downloaded and verified %d files (%.1f MiB) of %s@%s in %.1f s", len(plan.files), total / 2**20,
             spec.repo_id, sha, time.monotonic() - started)
    return dest


def _read_json(path: Path) -> dict:
    try:
        return json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return {}


def _metadata_path(dest: Path, relative: str) -> Path:
    return dest / ".cache" / "huggingface" / "download" / f"{relative}.metadata"


def _remove_stale(dest: Path, wanted: set[str]) -> None:
    """Remove files an earlier download of another revision left in `dest` (known by their metadata)."""
    meta_root = dest / ".cache" / "huggingface" / "download"
    if not meta_root.is_dir():
        return
    for meta in meta_root.rglob("*.metadata"):
        relative = meta.relative_to(meta_root).as_posix().removesuffix(".metadata")
        if relative not in wanted:
            (dest / relative).unlink(missing_ok=True)
            meta.unlink(missing_ok=True)
            log.info("removed %s: not part of this revision", relative)


def verify_snapshot(repo_id: str, sha: str, dest: Path, files: list[str], *, api, endpoint: str,
                    max_workers: int = 2) -> int:
    """Check every file against the hub's metadata at `sha` (LFS: sha256; others: git blob id). Return bytes.

    Hashing streams each file (flat memory). A mismatching file is deleted so a rerun fetches it again.
    """
    infos = {}
    for start in range(0, len(files), PATHS_INFO_BATCH):
        batch = files[start:start + PATHS_INFO_BATCH]
        for info in _hub_call(f"reading checksums of {repo_id}@{sha}", endpoint,
                              lambda b=batch: api.get_paths_info(repo_id, b, revision=sha)):
            infos[info.path] = info

    def check(relative: str) -> int:
        info = infos.get(relative)
        if info is None:
            raise HubError(f"the hub reports no metadata for {relative} in {repo_id}@{sha}; fix: check the mirror "
                           "serves paths-info for this repo")
        path = dest / relative
        if not path.is_file():
            raise HubError(f"{relative} of {repo_id}@{sha} is missing after the download; fix: rerun the download")
        lfs = getattr(info, "lfs", None)
        if lfs is not None:
            algorithm, expected, expected_size = "sha256", lfs.sha256, lfs.size
            actual, size = sha256_file(path)
        else:
            algorithm, expected, expected_size = "git blob sha1", info.blob_id, info.size
            actual, size = git_blob_sha1(path), path.stat().st_size
        if actual != expected or size != expected_size:
            path.unlink(missing_ok=True)
            _metadata_path(dest, relative).unlink(missing_ok=True)
            raise ChecksumMismatchError(repo_id, sha, relative, f"{expected} ({expected_size} bytes)",
                                        f"{actual} ({size} bytes)", algorithm)
        return size

    with ThreadPoolExecutor(max_workers=max_workers, thread_name_prefix="verify") as pool:
        return sum(pool.map(check, files))
