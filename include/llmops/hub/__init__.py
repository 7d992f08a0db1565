"""Model source: resolve a Hugging Face revision to a sha, download it pinned, enforce the weight policy,
verify every file against the hub's checksums.

    sha = resolve_revision(spec, token)
    download_snapshot(spec, sha, Path("/work/source"), token)
"""

from llmops.hub.errors import (
    ChecksumMismatchError,
    HubError,
    RepoNotFoundError,
    RevisionNotFoundError,
    WeightPolicyError,
)
from llmops.hub.policy import DownloadPlan, plan_download
from llmops.hub.source import download_snapshot, hub_endpoint, resolve_revision, verify_snapshot

__all__ = [
    "ChecksumMismatchError",
    "DownloadPlan",
    "HubError",
    "RepoNotFoundError",
    "RevisionNotFoundError",
    "WeightPolicyError",
    "download_snapshot",
    "hub_endpoint",
    "plan_download",
    "resolve_revision",
    "verify_snapshot",
]
