"""Errors of the Hugging Face source. Messages name the repo, the revision, the rule and the fix.

They never contain the token.
"""

from __future__ import annotations

from llmops.errors import LlmopsError, TransientError


class HubError(LlmopsError):
    """Base class for model-source errors."""


class HubUnavailableError(HubError, TransientError):
    """The endpoint could not be reached or answered with a server error (5xx, 408, 429): retried."""


class DownloadIncompleteError(HubError, TransientError):
    """A file of the snapshot is missing after the download (cut short, removed meanwhile): retried."""


class RepoNotFoundError(HubError):
    def __init__(self, repo_id: str, endpoint: str):
        self.repo_id, self.endpoint = repo_id, endpoint
        super().__init__(
            f"repo {repo_id!r} was not found on {endpoint} (or the token cannot see it)",
            fix="check repo_id in models.yaml, the model's endpoint / HF_ENDPOINT, and that the Hugging Face connection's token has "
            "access to it"
        )


class RevisionNotFoundError(HubError):
    def __init__(self, repo_id: str, revision: str, endpoint: str, known: list[str] | None = None):
        self.repo_id, self.revision, self.endpoint = repo_id, revision, endpoint
        hint = f" (branches and tags: {', '.join(known)})" if known else ""
        super().__init__(
            f"revision {revision!r} does not exist in repo {repo_id!r} on {endpoint}{hint}",
            fix="set revision in models.yaml to an existing branch, tag or full commit sha"
        )


class WeightPolicyError(HubError):
    """The repo's files break the weight policy (pickle weights, custom code) the registry allows."""


class ChecksumMismatchError(HubError):
    def __init__(self, repo_id: str, sha: str, path: str, expected: str, actual: str, algorithm: str = "sha256"):
        self.repo_id, self.sha, self.path = repo_id, sha, path
        self.expected, self.actual, self.algorithm = expected, actual, algorithm
        super().__init__(
            f"{path} downloaded from {repo_id}@{sha} has {algorithm} {actual}, but the hub's metadata says "
            f"{expected}: the mirror served different bytes; the file was removed and nothing downstream may use this "
            "download",
            fix="repair or re-sync the mirror (or switch endpoint), then rerun"
        )
