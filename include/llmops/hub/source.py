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

import contextlib
import fcntl
import json
import logging
import os
import time
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from llmops.artefacts.manifest import SHA_RE
from llmops.config.schema import ModelSpec
from llmops.hashing import git_blob_sha1, sha256_file
from llmops.hub.errors import (
    ChecksumMismatchError,
    DownloadIncompleteError,
    HubError,
    HubUnavailableError,
    RepoNotFoundError,
    RevisionNotFoundError,
)
from llmops.hub.policy import CONFIG_FILES, check_remote_code, plan_download
from llmops.settings import get_settings

log = logging.getLogger(__name__)

DEFAULT_ENDPOINT = "https://huggingface.co"
PATHS_INFO_BATCH = 100
#: How often a download waiting for its twin says so in the log.
WAIT_NOTE_S = 30.0


def hub_endpoint(spec: ModelSpec, mirror: str | None = None) -> str:
    """models.yaml `endpoint` > HF_ENDPOINT > `mirror` (the Connection's host) > huggingface.co."""
    return (spec.endpoint or get_settings().hf_endpoint or mirror or DEFAULT_ENDPOINT).rstrip("/")


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
        raise error(f"{what} failed against {endpoint}: {type(exc).__name__}: {str(exc).splitlines()[0]}",
                    fix="check the endpoint (models.yaml endpoint / HF_ENDPOINT) is reachable, then rerun") from None


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
        raise HubError(f"{endpoint} returned no commit sha for {spec.repo_id}@{spec.revision} (got {sha!r})",
                       fix="use an endpoint that implements the Hugging Face API (model_info with revision)")
    log.info("resolved %s@%s to %s on %s", spec.repo_id, spec.revision, sha, endpoint)
    return sha


def download_snapshot(spec: ModelSpec, sha: str, dest: Path, token: str | None = None,
                      mirror: str | None = None) -> Path:
    """Download `spec.repo_id` at commit `sha` into `dest` under the weight policy, then verify every file.

    One download per folder at a time, and once: every recipe of a model downloads the same commit into the
    same `dest`, so the first download takes an exclusive lock (`flock` on `.<dest>.lock` beside it) and the
    others wait for it, then find its completion marker (`.<dest>.complete.json`, written after every file
    was verified, naming the sha and each file's size) and return at once without fetching or hashing
    again. A download that died (killed task, lost pod) leaves no marker: the next one resumes it. Across
    pods this holds when `dest` is on a shared volume with POSIX locks (the model-cache PVC on NAS over
    NFSv4 or CPFS; not on an OSS fuse mount, where each pod then downloads for itself).

    Raises WeightPolicyError before anything large is downloaded, ChecksumMismatchError (after removing
    the bad file) when bytes differ from the hub's metadata.
    """
    from huggingface_hub.errors import RepositoryNotFoundError
    from huggingface_hub.errors import RevisionNotFoundError as HfRevisionNotFound

    if not isinstance(sha, str) or not SHA_RE.match(sha):
        raise HubError(f"{sha!r} is not a 40-hex commit sha; rule: downloads are pinned to a resolved commit",
                       fix="pass the sha from resolve_revision(), not a branch or tag")
    endpoint = hub_endpoint(spec, mirror)
    api = _api(endpoint, token)
    dest = Path(dest)
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
    with _download_lock(dest, f"{spec.repo_id}@{sha}"):
        if _complete(dest, spec.repo_id, sha, plan.files):
            configs = [name for name in CONFIG_FILES if name in plan.files]
            check_remote_code(spec, sha, {name: _read_json(dest / name) for name in configs})
            log.info("%s@%s is already downloaded and verified in %s (by an earlier step of this model): reused",
                     spec.repo_id, sha, dest)
            return dest
        _marker(dest).unlink(missing_ok=True)
        _fetch(spec, sha, dest, plan, api=api, endpoint=endpoint, token=token)
    return dest


def _fetch(spec: ModelSpec, sha: str, dest: Path, plan, *, api, endpoint: str, token: str | None) -> None:
    from huggingface_hub import snapshot_download

    started = time.monotonic()
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
    _write_marker(dest, spec.repo_id, sha, plan.files)
    log.info("downloaded and verified %d files (%.1f MiB) of %s@%s in %.1f s", len(plan.files), total / 2**20,
             spec.repo_id, sha, time.monotonic() - started)


def _marker(dest: Path) -> Path:
    return dest.with_name(f".{dest.name}.complete.json")


def _write_marker(dest: Path, repo_id: str, sha: str, files: list[str]) -> None:
    marker = _marker(dest)
    staged = marker.with_name(f"{marker.name}.{os.getpid()}")
    staged.write_text(json.dumps({"repo_id": repo_id, "sha": sha,
                                  "files": {name: (dest / name).stat().st_size for name in sorted(files)}}))
    os.replace(staged, marker)


def _complete(dest: Path, repo_id: str, sha: str, files: list[str]) -> bool:
    """True when a finished download of exactly these files at `sha` is in `dest`, unchanged in size."""
    recorded = _read_json(_marker(dest))
    if recorded.get("repo_id") != repo_id or recorded.get("sha") != sha or set(recorded.get("files", {})) != set(files):
        return False
    for name, size in recorded["files"].items():
        try:
            if (dest / name).stat().st_size != size:
                return False
        except OSError:
            return False
    return True


@contextlib.contextmanager
def _download_lock(dest: Path, what: str) -> Iterator[None]:
    """Hold the exclusive lock of `dest` (a twin download waits; the kernel frees it when its holder dies)."""
    lock_path = dest.with_name(f".{dest.name}.lock")
    lock_path.parent.mkdir(parents=True, exist_ok=True)
    with open(lock_path, "a+") as handle:
        started = time.monotonic()
        noted = 0.0
        while True:
            try:
                fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
                break
            except BlockingIOError:
                waited = time.monotonic() - started
                if waited >= noted:
                    log.info("waiting for another download of %s into %s to finish (%.0f s so far)", what, dest,
                             waited)
                    noted = waited + WAIT_NOTE_S
                time.sleep(0.5)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


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
            raise HubError(f"the hub reports no metadata for {relative} in {repo_id}@{sha}", fix="check the mirror "
                           "serves paths-info for this repo")
        path = dest / relative
        if not path.is_file():
            raise DownloadIncompleteError(f"{relative} of {repo_id}@{sha} is missing from {dest} after the download "
                                          "(removed meanwhile, or the download was cut short)",
                                          fix="nothing: the step is retried and downloads it again")
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
