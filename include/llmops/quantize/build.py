"""Run one recipe on a downloaded Hugging Face checkpoint and write the quantized checkpoint.

Stage, verify, publish: the tool writes into `<out>.partial/`, the result is checked (weights and the
format's config file exist), then the directory is renamed to `<out>`. A rerun finds `<out>` with its
`llmops_quantize.json` and returns it without quantizing again (same source sha, same recipe).

Heavy imports (torch, llmcompressor, modelopt) happen inside the functions: the catalogue and the
planner import this package on the Airflow side, which has no torch.
"""

from __future__ import annotations

import contextlib
import importlib.metadata
import json
import logging
import shutil
import time
from pathlib import Path

from llmops.config.recipes import RECIPES, Recipe
from llmops.hardware import cuda_available
from llmops.quantize.errors import QuantizeError, RecipeUnavailable
from llmops.validate.golden import GoldenSet

log = logging.getLogger(__name__)

METADATA_FILE = "llmops_quantize.json"
# Layers kept in full precision: the output head is small and most sensitive to rounding.
IGNORE = ["lm_head"]
# GPTQ calibration texts are the golden prompts: short, so this only guards against a tokenizer without a limit.
CALIBRATION_MAX_TOKENS = 512


def tool_versions(*packages: str) -> dict[str, str]:
    versions = {}
    for package in packages:
        with contextlib.suppress(importlib.metadata.PackageNotFoundError):
            versions[package] = importlib.metadata.version(package)
    return versions


def _load(source: Path, *, trust_remote_code: bool):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    device_map = "auto" if cuda_available() else None
    model = AutoModelForCausalLM.from_pretrained(
        source, dtype="auto", device_map=device_map, trust_remote_code=trust_remote_code)
    tokenizer = AutoTokenizer.from_pretrained(source, trust_remote_code=trust_remote_code)
    model.eval()
    return model, tokenizer


def _llmcompressor(recipe: Recipe, model, tokenizer, out: Path, calibration: list[str], *,
                   trust_remote_code: bool = False) -> dict:
    # Data-free unless the recipe names GPTQ: W8A8 (int8 weights, dynamic per-token int8 activations), W4A16
    # (round-to-nearest, group 128) and FP8_DYNAMIC need no calibration set, so the same code runs on CPU and in a
    # pod. GPTQ calibrates on the golden prompts, layer by layer on the model's device (the GPU in a pod).
    from llmcompressor import oneshot
    from llmcompressor.modifiers.quantization import GPTQModifier, QuantizationModifier

    gptq = recipe.params.get("algorithm") == "GPTQ"
    modifier = (GPTQModifier if gptq else QuantizationModifier)(targets="Linear", scheme=recipe.scheme, ignore=IGNORE)
    dataset = {}
    if gptq:
        from datasets import Dataset

        dataset = {"dataset": Dataset.from_dict({"text": calibration}), "processor": tokenizer,
                   "num_calibration_samples": len(calibration), "max_seq_length": CALIBRATION_MAX_TOKENS,
                   "shuffle_calibration_samples": False}
    # llm-compressor reloads the config and processor itself: without the flag it refuses custom code
    oneshot(model=model, recipe=modifier, trust_remote_code_model=trust_remote_code, **dataset)
    model.save_pretrained(out, save_compressed=True)
    tokenizer.save_pretrained(out)
    details = {"format": "compressed-tensors", "scheme": recipe.scheme, "ignore": IGNORE, "calibration": "none"}
    if gptq:  # only then: the data-free recipes' metadata stays byte for byte what it was (immutable store)
        details.update(algorithm="GPTQ", calibration=f"{len(calibration)} golden prompts")
    return details


_TOOL_PACKAGES = {"llmcompressor": ("llmcompressor", "compressed-tensors"), "modelopt": ("nvidia-modelopt",),
                  "optimum-gptq": ("optimum", "gptqmodel")}
_MODELOPT_CONFIGS = {"FP8": "FP8_DEFAULT_CFG", "INT4_AWQ": "INT4_AWQ_CFG", "NVFP4": "NVFP4_DEFAULT_CFG"}


def _calibrate_loop(tokenizer, calibration: list[str]):
    def forward_loop(model):
        import torch

        with torch.no_grad():
            for text in calibration:
                batch = tokenizer(text, return_tensors="pt").to(model.device)
                model(**batch)
    return forward_loop


def _modelopt(recipe: Recipe, model, tokenizer, out: Path, calibration: list[str], **_) -> dict:
    # ModelOpt's unified Hugging Face checkpoint (hf_quant_config.json): what current TensorRT-LLM
    # (PyTorch backend) loads directly, no engine build.
    import modelopt.torch.quantization as mtq
    import torch
    from modelopt.torch.export import export_hf_checkpoint

    config = getattr(mtq, _MODELOPT_CONFIGS[recipe.scheme])
    mtq.quantize(model, config, forward_loop=_calibrate_loop(tokenizer, calibration))
    with torch.inference_mode():
        export_hf_checkpoint(model, export_dir=str(out))
    tokenizer.save_pretrained(out)
    quant_config = json.loads((out / "hf_quant_config.json").read_text())
    return {"format": "modelopt-hf", "scheme": recipe.scheme, "calibration": f"{len(calibration)} golden prompts",
            "quant_algo": quant_config.get("quantization", {}).get("quant_algo")}


def _optimum_gptq(recipe: Recipe, model, tokenizer, out: Path, calibration: list[str], **_) -> dict:
    from optimum.gptq import GPTQQuantizer

    quantizer = GPTQQuantizer(dataset=calibration, **recipe.params)
    quantizer.quantize_model(model, tokenizer)
    quantizer.save(model, str(out))
    tokenizer.save_pretrained(out)
    return {"format": "gptq", "scheme": recipe.scheme, **recipe.params,
            "calibration": f"{len(calibration)} golden prompts"}


def check_runnable(recipe: Recipe) -> None:
    """Refuse a recipe this machine cannot run, before anything is loaded or written."""
    if recipe.cpu_ok:
        return
    if recipe.tool == "optimum-gptq":
        import importlib.util

        missing = [name for name in ("gptqmodel",) if importlib.util.find_spec(name) is None]
        if missing or not cuda_available():
            raise RecipeUnavailable(
                f"recipe {recipe.name}: optimum's GPTQ needs a CUDA GPU and the gptqmodel package "
                f"(GPU here: {cuda_available()}, missing: {', '.join(missing) or 'nothing'})",
                fix="run model_refresh on runtime kubernetes (the worker image has both), "
                "or use llmcompressor-w4a16 for an int4 vLLM checkpoint that builds on CPU")


def load_metadata(out: Path) -> dict | None:
    path = Path(out) / METADATA_FILE
    return json.loads(path.read_text()) if path.is_file() else None


def quantize(recipe_name: str, source: Path, out: Path, *, golden: GoldenSet, trust_remote_code: bool = False,
             max_model_len: int = 4096, tensor_parallel_size: int = 1, source_meta: dict | None = None) -> dict:
    """Quantize `source` with recipe `recipe_name` into `out`; return the metadata written beside it.

    The golden prompts are the calibration texts of recipes that calibrate. The reference the validate step
    judges the checkpoint against is not made here: it is the unquantized checkpoint served by the validating
    runtime itself (llmops.validate.reference_store).
    """
    if recipe_name not in RECIPES:
        raise QuantizeError(f"recipe {recipe_name!r} is unknown", fix=f"use one of {', '.join(sorted(RECIPES))}")
    recipe = RECIPES[recipe_name]
    source, out = Path(source), Path(out)
    if not (source / "config.json").is_file():
        raise QuantizeError(f"source {source} has no config.json", fix="point --source at a downloaded "
                            "Hugging Face snapshot (the download step's output)")
    existing = load_metadata(out)
    if existing and existing.get("recipe") == recipe.name and existing.get("source") == (source_meta or {}):
        log.info("%s already holds a %s checkpoint of this source; reusing it", out, recipe.name)
        return existing
    check_runnable(recipe)

    staging = out.parent / (out.name + ".partial")
    shutil.rmtree(staging, ignore_errors=True)
    staging.mkdir(parents=True)
    started = time.monotonic()
    log.info("quantizing %s with %s (%s %s)", source, recipe.name, recipe.tool, recipe.scheme)
    calibration = golden.texts
    model, tokenizer = _load(source, trust_remote_code=trust_remote_code)
    runner = {"llmcompressor": _llmcompressor, "modelopt": _modelopt, "optimum-gptq": _optimum_gptq}[recipe.tool]
    details = runner(recipe, model, tokenizer, staging, calibration, trust_remote_code=trust_remote_code)
    if trust_remote_code:
        _copy_remote_code(source, staging)
    versions = tool_versions("torch", "transformers", *_TOOL_PACKAGES[recipe.tool])
    _verify(recipe, staging)
    metadata = {
        "recipe": recipe.name, "tool": recipe.tool, "runtime": recipe.runtime, "scheme": recipe.scheme,
        "min_compute_capability": recipe.min_compute_capability, "params": recipe.params,
        "quantization": details, "tool_versions": versions, "source": source_meta or {},
        "trust_remote_code": trust_remote_code,
    }
    # Only what the checkpoint is goes into the file (no timings): a forced rebuild of the same source
    # with the same tools yields the same bytes, which the immutable store accepts as "already published".
    (staging / METADATA_FILE).write_text(json.dumps(metadata, indent=1, sort_keys=True))
    shutil.rmtree(out, ignore_errors=True)
    staging.rename(out)
    seconds = round(time.monotonic() - started, 1)
    log.info("wrote %s in %.1f s", out, seconds)
    return {**metadata, "seconds": seconds}


def _copy_remote_code(source: Path, staging: Path) -> None:
    """A checkpoint of a custom-code model needs the code beside it: its config's auto_map names those files,
    and the serving runtime (vLLM --trust-remote-code) imports them from the checkpoint directory."""
    for path in source.glob("*.py"):
        if not (staging / path.name).exists():
            shutil.copy2(path, staging / path.name)


def _verify(recipe: Recipe, staging: Path) -> None:
    weights = list(staging.glob("*.safetensors"))
    if not weights:
        raise QuantizeError(f"recipe {recipe.name} wrote no weights into {staging}",
                            fix="check the tool's log above (unsupported architecture?)")
    required = {"llmcompressor": "config.json", "optimum-gptq": "config.json",
                "modelopt": "hf_quant_config.json"}[recipe.tool]
    if not (staging / required).is_file():
        raise QuantizeError(f"recipe {recipe.name} wrote no {required} into {staging}",
                            fix="check the tool's log above")
    if recipe.tool == "llmcompressor":
        config = json.loads((staging / "config.json").read_text())
        if "quantization_config" not in config:
            raise QuantizeError(f"recipe {recipe.name}: {staging}/config.json has no quantization_config",
                                fix="upgrade llm-compressor or report the model architecture")
