"""A test double for tests and benchmarks: a real embedder that counts what it embeds."""

from __future__ import annotations

from llmops.kb.embedders import Embedder


class CountingEmbedder:
    """Wraps a real embedder and counts what it embeds (tests and benchmarks assert on the counts)."""

    def __init__(self, inner: Embedder):
        self.inner = inner
        self.kind, self.model, self.dimension = inner.kind, inner.model, inner.dimension
        self.calls = 0
        self.texts = 0

    def embed(self, texts: list[str]) -> list[list[float]]:
        self.calls += 1
        self.texts += len(texts)
        return self.inner.embed(texts)

    def reset(self) -> None:
        self.calls = self.texts = 0
