"""Errors of the knowledge-base pipeline. Each names the input, the rule it broke and the fix."""

from __future__ import annotations

from llmops.errors import LlmopsError, TransientError


class KbError(LlmopsError):
    """Base class for knowledge-base indexing errors."""


class SourceNotFoundError(KbError):
    """The knowledge base's source directory or prefix does not exist or lists nothing."""


class DocumentError(KbError):
    """One document could not be read or parsed; the run skips it and reports it."""


class EmbedderError(KbError):
    """The embedder could not be loaded or reached, or returned something unusable."""


class EmbedderUnreachableError(EmbedderError, TransientError):
    """The embedding endpoint or the model hub cannot be reached now (retried: servers come back)."""


class MilvusUnreachableError(KbError, TransientError):
    """The Milvus server cannot be reached now (retried: servers come back)."""


class KbAlreadyRunning(KbError):
    """Another process (another pod, another LLMOPS_HOME) holds this knowledge base's lease in Milvus: the run
    exits without doing anything (not a failure: that run does the work)."""


class DimensionMismatchError(EmbedderError):
    """The embedder's vectors do not have the dimension the registry or the live collection expects."""


class IndexValidationError(KbError):
    """A freshly built collection failed validation (row count or golden-query recall); the alias was not moved."""


class RollbackError(KbError):
    """There is no earlier collection version to move the alias back to."""


class MilvusLiteBusyError(KbError, TransientError):
    """A Milvus Lite file is held by another process (retried: that process ends); serve it to share it."""


class Stopped(KbError):
    """The run was asked to stop (SIGTERM); what it did is logged and a full build's unfinished version dropped."""


class HybridUnsupportedError(KbError):
    """The knowledge base asks for hybrid (BM25 + dense) retrieval from a Milvus without BM25 functions."""


class LeaseLost(Stopped):
    """Another process took this knowledge base's lease over (this one stalled past the ttl): stop writing."""
