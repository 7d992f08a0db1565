"""Errors of the artefact store. Messages name the artefact, the rule and the fix."""

from __future__ import annotations

from llmops.errors import LlmopsError


class ArtefactError(LlmopsError):
    """Base class for artefact store errors."""


class StoreUriError(ArtefactError):
    """The store URI (LLMOPS_STORE_URI or a run parameter) cannot be used."""


class ArtefactNotFoundError(ArtefactError):
    """No published version (no manifest.json) at the requested place."""


class ImmutableArtefactError(ArtefactError):
    """A different manifest is already published under the prefix: versions never change."""


class ArtefactIntegrityError(ArtefactError):
    """Bytes do not match their recorded size or checksum (upload, download or local file)."""

    def __init__(self, message: str, fix: str = "", *, path: str = "", expected: str = "", actual: str = ""):
        self.path, self.expected, self.actual = path, expected, actual
        super().__init__(message, fix)


class StoreAccessError(ArtefactError):
    """The store refused the credentials (unknown key, wrong secret, no permission): permanent."""


class SignatureRefused(ArtefactError):
    """A version's signature does not verify against the trusted keys (or it is unsigned where one is required)."""
