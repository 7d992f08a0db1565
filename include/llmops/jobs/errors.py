"""Errors of the job entrypoints: a malformed argument, a full or read-only disk, an unvalidated checkpoint."""

from __future__ import annotations

from llmops.errors import LlmopsError


class JobArgumentError(LlmopsError):
    """A job's command-line argument is malformed (permanent). One line: the argument, what is wrong, the fix."""

    def __init__(self, argument: str, what: str, fix: str):
        self.argument = argument
        super().__init__(f"{argument}: {what}", fix=fix)


class StorageError(LlmopsError):
    """A disk or store is full or not writable (permanent: a retry minutes later meets the same disk)."""


class NotValidated(LlmopsError):
    """The checkpoint has no passing (or deliberately skipped) validation record."""
