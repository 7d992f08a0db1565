"""Run a local sentence-transformers model's transformer on ONNX Runtime (optionally int8), exported offline.

Why not sentence-transformers' own `backend="onnx"`: it loads through `optimum-onnx`, and every release of
that (like `optimum-intel` for OpenVINO) caps transformers below the 5.x the worker environment needs for
llm-compressor. So the export is done here with what is installed: `torch.onnx.export` of the already
loaded model, int8 by onnxruntime's own dynamic quantization (per channel: cosine to torch's vectors stays
above 0.99). Only the transformer's forward pass moves to ONNX Runtime: tokenization, length-sorted batching,
pooling and normalization stay sentence-transformers' own, so both backends see the same inputs.

The export is cached per (model files, variant, library versions) under `$LLMOPS_HOME/cache/embedders`.
It is written into a private temporary directory and renamed into place in one step: two jobs exporting
at once both succeed, one rename wins, the other's copy is discarded, and a killed export leaves no
half-written model that a later run could load.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import re
import shutil
import tempfile
import time
import warnings
from collections.abc import Iterator
from pathlib import Path

from llmops.kb.errors import EmbedderError, Stopped

log = logging.getLogger(__name__)

EXPORT_FORMAT = 1  # bump when the export itself changes: cached exports of other formats are not reused
ONNX_FILE = "model.onnx"
DONE_FILE = "export.json"  # written last inside the temporary directory: a published export is complete
STALE_TMP_S = 3600  # temporary directories older than this are leftovers of killed exports


def require_onnx_runtime():
    try:
        import onnx  # noqa: F401  (the export and the quantizer need it)
        import onnxruntime
    except ImportError as exc:
        raise EmbedderError(
            f"embedder backend 'onnx' needs the packages onnxruntime and onnx, but {exc.name} is not installed",
            fix="run the job in the worker environment (scripts/envs.sh worker, requirements/worker.txt) or "
            "set embedder.backend: torch in knowledge_bases.yaml") from None
    return onnxruntime


def export_key(name: str, model_dir: Path, quantize: str | None) -> str:
    """Name of the cached export: the model's files (name, size, mtime), the variant and the exporters' versions."""
    import onnxruntime
    import torch

    files = sorted((str(p.relative_to(model_dir)), p.stat().st_size, p.stat().st_mtime_ns)
                   for p in model_dir.rglob("*") if p.is_file())
    ident = {"format": EXPORT_FORMAT, "files": files, "quantize": quantize, "torch": torch.__version__,
             "onnxruntime": onnxruntime.__version__, "model": str(model_dir.resolve())}
    digest = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()[:16]
    slug = re.sub(r"[^a-z0-9._-]+", "-", name.lower()).strip("-.")[:60] or "model"
    return f"{slug}-onnx{'-' + quantize if quantize else ''}-{digest}"


def publish(tmp: Path, final: Path) -> bool:
    """Move a finished export into place in one rename; False (and `tmp` removed) when a twin was first."""
    try:
        os.rename(tmp, final)
        return True
    except OSError:
        if (final / DONE_FILE).is_file():  # a concurrent export won: use its copy, drop ours
            shutil.rmtree(tmp, ignore_errors=True)
            return False
        raise


def _drop_stale_tmp(cache_dir: Path) -> None:
    now = time.time()
    for leftover in cache_dir.glob(".tmp-*"):
        with contextlib.suppress(OSError):
            if now - leftover.stat().st_mtime > STALE_TMP_S:
                shutil.rmtree(leftover, ignore_errors=True)


@contextlib.contextmanager
def _quiet() -> Iterator[None]:
    """The exporter and the quantizer warn about tracing and pre-processing on every export: log noise."""
    root = logging.getLogger()
    level = root.level
    root.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            yield
    finally:
        root.setLevel(level)


def _export(st_model, target: Path, quantize: str | None) -> None:
    """Write the transformer of a loaded SentenceTransformer as ONNX (and its int8 version) into `target`."""
    import torch

    transformer = st_model[0]
    hf_model = transformer.model
    names = [n for n in ("input_ids", "attention_mask", "token_type_ids")
             if n in transformer.tokenizer.model_input_names]

    class Forward(torch.nn.Module):
        def __init__(self, inner):
            super().__init__()
            self.inner = inner

        def forward(self, *inputs):
            return self.inner(**dict(zip(names, inputs, strict=True)), return_dict=True).last_hidden_state

    sample = transformer.tokenizer(["an example sentence", "a second, longer example sentence"], padding=True,
                                   return_tensors="pt")
    exported = target / ("model-fp32.onnx" if quantize else ONNX_FILE)
    axes = {name: {0: "batch", 1: "tokens"} for name in [*names, "last_hidden_state"]}
    was_training = hf_model.training
    hf_model.eval()
    with _quiet(), torch.no_grad():
        torch.onnx.export(Forward(hf_model), tuple(sample[n] for n in names), str(exported), input_names=names,
                          output_names=["last_hidden_state"], dynamic_axes=axes, opset_version=17, dynamo=False)
    hf_model.train(was_training)
    if quantize == "int8":
        import onnx
        from onnxruntime.quantization import QuantType, quantize_dynamic

        with _quiet():
            quantize_dynamic(str(exported), str(target / ONNX_FILE), weight_type=QuantType.QInt8, per_channel=True,
                             extra_options={"DefaultTensorType": onnx.TensorProto.FLOAT})
        exported.unlink()


def _stopped_inside(exc: BaseException) -> Stopped | None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        if isinstance(exc, Stopped):
            return exc
        seen.add(id(exc))
        exc = exc.__cause__ or exc.__context__
    return None


def cached_export(st_model, name: str, model_dir: Path, quantize: str | None, cache_dir: Path) -> Path:
    """The ONNX file for this model and variant, exported once into `cache_dir` (race-safe, see module doc)."""
    require_onnx_runtime()
    try:
        cache_dir.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise EmbedderError(f"the ONNX export cache {cache_dir} cannot be created ({exc.strerror})", fix="point "
                            "LLMOPS_HOME at a writable directory or set embedder.backend: torch") from None
    final = cache_dir / export_key(name, model_dir, quantize)
    if (final / DONE_FILE).is_file():
        log.info("onnx export of %s reused from %s", name, final)
        return final / ONNX_FILE
    _drop_stale_tmp(cache_dir)
    started = time.monotonic()
    tmp = Path(tempfile.mkdtemp(prefix=".tmp-", dir=cache_dir))
    log.info("exporting %s to ONNX%s (once; cached in %s)", name, f" ({quantize})" if quantize else "", cache_dir)
    try:
        _export(st_model, tmp, quantize)
        (tmp / DONE_FILE).write_text(json.dumps({"model": name, "path": str(model_dir), "quantize": quantize}) + "\n")
        tmp.chmod(0o755)  # mkdtemp makes it private; the published export is shared like the rest of $LLMOPS_HOME
        won = publish(tmp, final)
    except (EmbedderError, Stopped):  # a SIGTERM mid-export: exit 143, nothing published, the next run exports
        raise
    except Exception as exc:
        stopped = _stopped_inside(exc)
        if stopped is not None:  # the exporter wrapped the SIGTERM's exception in its own
            raise stopped from None
        raise EmbedderError(
            f"exporting embedder model {name!r} ({model_dir}) to ONNX{' (int8)' if quantize else ''} failed "
            f"({type(exc).__name__}: {str(exc)[:300]}); nothing was cached", fix="set embedder.backend: torch "
            "for this knowledge base (the default), or use a model whose transformer torch.onnx can export") from None
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    log.info("onnx export of %s%s %s in %.1f s: %s", name, f" ({quantize})" if quantize else "",
             "written" if won else "done by a concurrent job", time.monotonic() - started, final)
    return final / ONNX_FILE


def attach(st_model, onnx_file: Path) -> None:
    """Make a loaded SentenceTransformer run its transformer's forward pass on ONNX Runtime."""
    import torch

    onnxruntime = require_onnx_runtime()
    options = onnxruntime.SessionOptions()
    # Idle worker threads would otherwise spin and burn the CPU that other jobs on the machine need.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    try:
        session = onnxruntime.InferenceSession(str(onnx_file), options, providers=["CPUExecutionProvider"])
    except Exception as exc:
        raise EmbedderError(
            f"ONNX Runtime cannot load the cached export {onnx_file} ({type(exc).__name__}: {str(exc)[:300]})",
            fix=f"delete {onnx_file.parent} so the next run exports it again") from None
    inputs = [i.name for i in session.get_inputs()]
    transformer = st_model[0]
    config = transformer.model.config

    class OnnxForward(torch.nn.Module):
        """Stands in for the Hugging Face model inside sentence-transformers' Transformer module."""

        def __init__(self):
            super().__init__()
            self.config = config
            self.device = torch.device("cpu")

        def forward(self, input_ids, attention_mask, token_type_ids=None, **_):
            given = {"input_ids": input_ids, "attention_mask": attention_mask,
                     "token_type_ids": token_type_ids if token_type_ids is not None else torch.zeros_like(input_ids)}
            feeds = {name: given[name].cpu().numpy() for name in inputs}
            (hidden,) = session.run(["last_hidden_state"], feeds)
            return {"last_hidden_state": torch.from_numpy(hidden)}

    transformer.model = OnnxForward()


# --- backend auto: measured once per machine -------------------------------------------------------------------

#: Sentences of the lengths a knowledge base's chunks have, for the measurement (no corpus is needed to choose).
_SAMPLE = [(" ".join(f"The {topic} service retries job {n} after {n % 7 + 1} minutes and records why." for n in
                     range(length))) for topic in ("scheduler", "storage", "alerts", "billing")
           for length in (2, 6, 12, 24)] * 4
AUTO_MIN_SPEEDUP = 1.1  # ONNX int8 must beat torch by this much (CPU time) to be chosen: torch's vectors are exact


def cpu_name() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    import platform

    return platform.processor() or platform.machine() or "unknown CPU"


def _cpu_seconds(st_model, texts: list[str], tries: int = 2) -> float:
    st_model.encode(texts[:4], batch_size=64, show_progress_bar=False)  # warm-up
    best = float("inf")
    for _ in range(tries):
        started = time.process_time()
        st_model.encode(texts, batch_size=64, show_progress_bar=False)
        best = min(best, time.process_time() - started)
    return best


def choose_backend(st_model, name: str, model_dir: Path, cache_dir: Path) -> dict:
    """Torch or ONNX int8 for this model on this CPU: the one with less CPU time on a fixed sample, measured at
    the first use on a machine and cached (`choice-*.json` beside the exports, keyed by model files, CPU and
    library versions). Int8 speed depends on the CPU's instructions (1.97x torch on one CPU, 1.10x on another)."""
    import platform

    require_onnx_runtime()
    cache_dir.mkdir(parents=True, exist_ok=True)
    cpu = cpu_name()
    key = hashlib.sha256(f"{cpu}|{platform.machine()}|{os.cpu_count()}".encode()).hexdigest()[:12]
    record = cache_dir / f"choice-{export_key(name, model_dir, 'auto')}-{key}.json"
    if record.is_file():
        with contextlib.suppress(OSError, ValueError):
            choice = json.loads(record.read_text())
            choice["why"] = choice["why"] + f"; measured before, cached in {record.name}"
            return choice
    transformer = st_model[0]
    torch_module = transformer.model
    torch_s = _cpu_seconds(st_model, _SAMPLE)
    attach(st_model, cached_export(st_model, name, model_dir, "int8", cache_dir))
    try:
        int8_s = _cpu_seconds(st_model, _SAMPLE)
    finally:
        transformer.model = torch_module  # the caller attaches the chosen backend itself
    speedup = torch_s / max(int8_s, 1e-9)
    use_int8 = speedup >= AUTO_MIN_SPEEDUP
    choice = {"backend": "onnx" if use_int8 else "torch", "quantize": "int8" if use_int8 else None, "cpu": cpu,
              "torch_cpu_s": round(torch_s, 3), "onnx_int8_cpu_s": round(int8_s, 3), "speedup": round(speedup, 2),
              "why": f"on {len(_SAMPLE)} sample chunks here torch needed {speedup:.2f}x the CPU time of ONNX int8, "
                     f"{'at least' if use_int8 else 'below'} the {AUTO_MIN_SPEEDUP:g}x that int8 must gain to be "
                     f"chosen (delete {record.name} to measure again)"}
    tmp = record.with_name(f".tmp-{os.getpid()}-{record.name}")
    tmp.write_text(json.dumps(choice, indent=1) + "\n")
    os.replace(tmp, record)  # a twin measuring at the same moment writes an equally valid choice
    return choice
