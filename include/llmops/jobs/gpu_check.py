"""python -m llmops.jobs.gpu_check --out DIR [--dry-run]: the GPU acceptance kit (scripts/gpu_check.sh runs it).

Builds two small models (the demo's tiny Llama and a random Qwen2 of about 50 MB), quantizes each with the
project's own recipes (`llmops.quantize.build.quantize`: llm-compressor GPTQ W4A16 calibrated on the device,
round-to-nearest W4A16 and W8A8, ModelOpt FP8 with its unified Hugging Face checkpoint export, which is what
TensorRT-LLM loads), and validates every checkpoint with the project's teacher-forced metric
(`llmops.validate.teacher_forced`) against the unquantized model, both run by transformers on the same device.
Each step is timed, with its peak GPU memory. Results go to DIR/gpu-check.json and DIR/gpu-check.md, rewritten
after every step so a run cut short still leaves what it measured; the models and checkpoints are made in a
temporary folder and removed at the end.

Without --dry-run it needs a CUDA GPU and refuses to start without one. --dry-run runs the same steps on the CPU
(a one-layer Qwen2 of width 256), so the kit is exercised by `make test` on machines without a GPU; a recipe the CPU cannot run
is recorded as skipped with the reason. A step that fails is recorded as failed with its error, and the kit
goes on with the next; the exit status is 1 when any step failed.
"""

from __future__ import annotations

import argparse
import contextlib
import datetime
import gc
import json
import logging
import os
import platform
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from pathlib import Path

from llmops.errors import InvalidValue

log = logging.getLogger("llmops.jobs.gpu_check")

#: The recipes the kit runs on every model: int4 with and without calibration, int8, and the TensorRT-LLM target.
RECIPES = ("llmcompressor-gptq-w4a16", "llmcompressor-w4a16", "llmcompressor-w8a8", "modelopt-fp8")
GOLDEN = {"prompts": ["The capital of France is", "One, two, three,", "Kubernetes schedules",
                      "Tokyo is a city", "Airflow runs tasks"], "max_new_tokens": 16}
TOP_K = 20
PACKAGES = ("torch", "transformers", "accelerate", "llmcompressor", "compressed-tensors", "nvidia-modelopt",
            "datasets", "safetensors")


def _environment(device: str) -> dict:
    import torch

    from llmops.quantize.build import tool_versions

    env = {"date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"), "device": device,
           "python": platform.python_version(), "versions": tool_versions(*PACKAGES),
           "torch_cuda": torch.version.cuda}
    if device == "cuda":
        env["gpu"] = torch.cuda.get_device_name(0)
        env["compute_capability"] = ".".join(map(str, torch.cuda.get_device_capability(0)))
        env["gpu_memory_gib"] = round(torch.cuda.get_device_properties(0).total_memory / 2**30, 1)
        with contextlib.suppress(OSError, subprocess.SubprocessError):
            env["driver"] = subprocess.run(
                ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"], capture_output=True,
                text=True, timeout=30, check=True).stdout.strip().splitlines()[0]
    else:
        env["gpu"] = None
        env["cpu"] = platform.processor() or platform.machine()
    return env


class Step:
    """Times one step and records its peak GPU memory, its outcome and (on failure) the error."""

    def __init__(self, results: dict, write, device: str, **fields):
        self.row = {**fields, "status": "running"}
        self.device = device
        results["steps"].append(self.row)
        self.write = write

    def __enter__(self):
        import torch

        gc.collect()  # the previous step's models, so that what this step holds is its own
        if self.device == "cuda":
            torch.cuda.synchronize()
            torch.cuda.empty_cache()
            torch.cuda.reset_peak_memory_stats()
            self.row["gpu_memory_at_start_mib"] = round(torch.cuda.memory_allocated() / 2**20, 1)
        self.started = time.monotonic()
        log.info("== %s", " ".join(str(self.row[k]) for k in ("model", "step", "recipe") if k in self.row))
        return self.row

    def __exit__(self, kind, error, tb):
        import torch

        if self.device == "cuda":
            with contextlib.suppress(Exception):
                torch.cuda.synchronize()
            self.row["peak_gpu_memory_mib"] = round(torch.cuda.max_memory_allocated() / 2**20, 1)
        self.row["seconds"] = round(time.monotonic() - self.started, 2)
        if error is not None:
            self.row["status"] = "failed"
            self.row["error"] = f"{type(error).__name__}: {error}"[:2000]
            self.row["traceback"] = "".join(traceback.format_exception(kind, error, tb))[-4000:]
            log.error("%s failed after %.1f s: %s", self.row.get("step"), self.row["seconds"], self.row["error"])
        elif self.row["status"] == "running":
            self.row["status"] = "ok"
        log.info("   %s in %.1f s%s", self.row["status"], self.row["seconds"],
                 f", peak GPU memory {self.row['peak_gpu_memory_mib']} MiB" if "peak_gpu_memory_mib" in self.row else "")
        self.write()
        return error is None or isinstance(error, Exception)  # record and go on; never swallow KeyboardInterrupt


def _load_unquantized(path: Path, device: str):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    model = AutoModelForCausalLM.from_pretrained(path, dtype="auto").to(device).eval()
    return model, AutoTokenizer.from_pretrained(path)


def _load_candidate(recipe, checkpoint: Path, device: str):
    from llmops.validate.emulated import load_compressed_tensors_checkpoint, load_fp8_checkpoint

    if recipe.tool == "modelopt":
        return load_fp8_checkpoint(checkpoint, device=device)
    return load_compressed_tensors_checkpoint(checkpoint, device=device)


def _teacher_forced(recipe, reference_rows: list[dict], candidate, golden) -> dict:
    from llmops.validate.reference import teacher_forced_logprobs
    from llmops.validate.teacher_forced import TeacherForcedPosition, TeacherForcedPrompt, judge_teacher_forced

    prompts = []
    for row in reference_rows:
        candidate_topk = teacher_forced_logprobs(candidate, row["prompt_token_ids"], row["token_ids"], TOP_K)
        prompts.append(TeacherForcedPrompt(
            prompt=row["prompt"], token_ids=row["token_ids"],
            positions=[TeacherForcedPosition(reference=r, candidate=c)
                       for r, c in zip(row["topk"], candidate_topk, strict=True)]))
    result = judge_teacher_forced(prompts, recipe.validation)
    log.info("%s", result.summary())
    return result.to_dict()


def _runnable(recipe, device: str) -> str | None:
    """Why `recipe` cannot run on this device, or None."""
    import torch

    if device == "cuda":
        major, minor = torch.cuda.get_device_capability(0)
        if major + minor / 10 < recipe.min_compute_capability:
            return f"skipped: needs CUDA compute capability {recipe.min_compute_capability}+ (this GPU: {major}.{minor})"
        return None
    if not recipe.cpu_ok:
        return "skipped: needs a CUDA GPU"
    return None


def run(out: Path, *, dry_run: bool, budget_s: float, tiny_model: Path | None = None) -> dict:
    try:
        import torch
    except ImportError:
        raise SystemExit(str(InvalidValue(
            f"gpu_check: {sys.executable} has no torch", fix="set LLMOPS_GPU_PYTHON to an interpreter with a CUDA "
            "build of torch, transformers and accelerate (or pass --dry-run)"))) from None

    from llmops.demo.tiny_model import build_random_qwen2, build_tiny_model
    from llmops.validate.golden import GoldenSet

    device = "cpu" if dry_run else "cuda"
    if not dry_run and not torch.cuda.is_available():
        raise SystemExit(str(InvalidValue("gpu_check: no CUDA GPU visible to torch", fix="run it on a machine with an "
                                          "NVIDIA GPU and a CUDA build of torch, or pass --dry-run for the CPU rehearsal")))
    out.mkdir(parents=True, exist_ok=True)
    # Models and checkpoints live apart from the results: only the two result files are kept.
    work = Path(tempfile.mkdtemp(prefix="llmops-gpu-check-"))
    started = time.monotonic()
    results = {"kit": "llmops GPU acceptance kit", "dry_run": dry_run, "budget_s": budget_s,
               "environment": _environment(device), "golden": GOLDEN, "top_k": TOP_K, "steps": []}

    def write() -> None:
        # whole files only: a reader (or a second kit writing to the same folder) never sees half of one
        results["elapsed_s"] = round(time.monotonic() - started, 1)
        for name, text in (("gpu-check.json", json.dumps(results, indent=1)), ("gpu-check.md", markdown(results))):
            partial = out / f".{name}.{os.getpid()}.partial"
            partial.write_text(text)
            partial.replace(out / name)

    golden = GoldenSet.from_dict(GOLDEN)

    def tiny_llama(path: Path) -> None:
        if tiny_model is None:
            build_tiny_model(path)
        else:  # one the caller already built (the test session's): the same model, minus the training time
            shutil.copytree(tiny_model, path)

    # The dry run keeps the CPU's share small: a Qwen2 of one layer of width 256 (still int4 groups of 128).
    builders = {
        "tiny-llama": tiny_llama,
        "qwen2-random": lambda path: (build_random_qwen2(path, layers=1, hidden=256, intermediate=512) if dry_run
                                      else build_random_qwen2(path)),
    }
    try:
        _check_models(builders, work, results, write, device, golden, started, budget_s, tiny_model)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    write()
    return results


def _check_models(builders, work, results, write, device, golden, started, budget_s, tiny_model) -> None:
    import torch

    from llmops.config.recipes import RECIPES as CATALOGUE
    from llmops.quantize.build import quantize
    from llmops.validate.reference import greedy_generations, teacher_forced_logprobs

    for model_name, build in builders.items():
        source = work / model_name / "source"
        with Step(results, write, device, model=model_name, step="build") as row:
            build(source)
            if model_name == "tiny-llama" and tiny_model is not None:
                row["copied_from"] = str(tiny_model)
            row["size_mb"] = round(sum(p.stat().st_size for p in source.glob("*.safetensors")) / 1e6, 1)
            config = json.loads((source / "config.json").read_text())
            row["architecture"] = config["architectures"][0]
            row["layers"], row["hidden"] = config["num_hidden_layers"], config["hidden_size"]
        if row["status"] != "ok":
            continue
        reference_rows: list[dict] = []
        with Step(results, write, device, model=model_name, step="reference") as row:
            model, tokenizer = _load_unquantized(source, device)
            generations = greedy_generations(model, tokenizer, golden.texts, golden.max_new_tokens)
            for text, generation in zip(golden.texts, generations, strict=True):
                reference_rows.append({"prompt": text, **generation, "topk": teacher_forced_logprobs(
                    model, generation["prompt_token_ids"], generation["token_ids"], TOP_K)})
            row["continuations"] = [g["text"] for g in generations]
            del model
        if row["status"] != "ok":
            continue
        for recipe_name in RECIPES:
            recipe = CATALOGUE[recipe_name]
            checkpoint = work / model_name / recipe_name
            reason = _runnable(recipe, device)
            if reason is None and time.monotonic() - started > budget_s:
                reason = f"skipped: the kit's time budget ({budget_s:.0f} s) was spent"
            if reason:
                results["steps"].append({"model": model_name, "step": "quantize", "recipe": recipe_name,
                                         "status": reason})
                write()
                continue
            with Step(results, write, device, model=model_name, step="quantize", recipe=recipe_name) as row:
                metadata = quantize(recipe_name, source, checkpoint, golden=golden)
                row["quantization"] = metadata["quantization"]
                row["checkpoint_mb"] = round(sum(p.stat().st_size for p in checkpoint.glob("*.safetensors")) / 1e6, 1)
                if recipe.tool == "modelopt":
                    row["export"] = "ModelOpt unified HF checkpoint (hf_quant_config.json), loaded by TensorRT-LLM"
                    if device == "cuda":  # ModelOpt builds its FP8 CUDA kernels on first use; without them it emulates
                        from modelopt.torch.quantization.extensions import get_cuda_ext_fp8

                        row["modelopt_fp8_cuda_extension"] = get_cuda_ext_fp8() is not None
            if row["status"] != "ok":
                continue
            with Step(results, write, device, model=model_name, step="validate", recipe=recipe_name) as row:
                candidate = _load_candidate(recipe, checkpoint, device)
                verdict = _teacher_forced(recipe, reference_rows, candidate, golden)
                del candidate
                row["validation"] = {k: v for k, v in verdict.items() if k != "prompts"}
                row["passed"] = verdict["passed"]
            if device == "cuda":
                torch.cuda.empty_cache()


def _metric(step: dict) -> str:
    v = step.get("validation")
    if not v:
        return ""
    top1 = "n/a" if v["confident_top1"] is None else f"{v['confident_top1']:.0%} of {v['confident_positions']}"
    return (f"mean KL {v['mean_kl']:.1e} (max {v['max_kl']:.1e}) nats, confident top-1 {top1}, "
            f"{'PASS' if v['passed'] else 'FAIL'}")


def markdown(results: dict) -> str:
    """The results as a page people read: environment, one row per step, then the failures' errors."""
    env = results["environment"]
    versions = ", ".join(f"{k} {v}" for k, v in env["versions"].items())
    lines = ["# GPU acceptance kit results" + (" (CPU dry run)" if results["dry_run"] else ""), "",
             f"- date: {env['date']}",
             f"- device: {env.get('gpu') or env.get('cpu')}" + (
                 f" (compute capability {env['compute_capability']}, {env['gpu_memory_gib']} GiB), "
                 f"driver {env.get('driver', 'unknown')}, CUDA (torch) {env['torch_cuda']}" if env.get("gpu") else ""),
             f"- Python {env['python']}; {versions}",
             f"- golden prompts: {len(results['golden']['prompts'])}, {results['golden']['max_new_tokens']} tokens "
             f"each, teacher-forced top-{results['top_k']}; total {results.get('elapsed_s', 0)} s "
             f"(budget {results['budget_s']:.0f} s)",
             "", "Validation: both models run by transformers on the same device; the candidate computes what its "
             "serving runtime computes (`llmops.validate.emulated`: int8 per-token activations for W8A8, FP8 weights "
             "and static FP8 activations for the ModelOpt checkpoint). Thresholds are the recipe's "
             "(`config.recipes`). GPU memory: allocated at the step's start (what earlier steps still hold) and "
             "its peak.", "",
             "| model | step | recipe | status | metric | seconds | GPU MiB at start / peak |",
             "| --- | --- | --- | --- | --- | --- | --- |"]
    for s in results["steps"]:
        status = s["status"]
        detail = _metric(s)
        if s["step"] == "build" and status == "ok":
            made = f"copied from {s['copied_from']}" if "copied_from" in s else "built on the CPU"
            detail = f"{s['architecture']}, {s['layers']} layers x {s['hidden']}, {s['size_mb']} MB ({made})"
        elif s["step"] == "quantize" and "checkpoint_mb" in s:
            q = s["quantization"]
            detail = f"{q['format']} {q['scheme']}, {q.get('algorithm') or q.get('quant_algo') or 'round-to-nearest'}, " \
                     f"calibration {q['calibration']}, {s['checkpoint_mb']} MB"
            if "modelopt_fp8_cuda_extension" in s:
                detail += f", ModelOpt FP8 CUDA kernels {'built' if s['modelopt_fp8_cuda_extension'] else 'MISSING'}"
        elif s["step"] == "reference" and status == "ok":
            detail = "unquantized greedy continuations and top-k"
        if status == "failed":
            detail = s["error"].splitlines()[0][:160].replace("|", "/")
        memory = (f"{s['gpu_memory_at_start_mib']} / {s['peak_gpu_memory_mib']}" if "peak_gpu_memory_mib" in s
                  else "")
        lines.append(f"| {s['model']} | {s['step']} | {s.get('recipe', '')} | {status} | {detail} | "
                     f"{s.get('seconds', '')} | {memory} |")
    failed = [s for s in results["steps"] if s["status"] == "failed"]
    if failed:
        lines += ["", "## Failures", ""]
        for s in failed:
            lines += [f"### {s['model']} {s['step']} {s.get('recipe', '')}", "", "```",
                      s["traceback"].rstrip(), "```", ""]
    return "\n".join(lines) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", type=Path, required=True, help="folder for gpu-check.json and gpu-check.md")
    parser.add_argument("--dry-run", action="store_true", help="run the same steps on the CPU")
    parser.add_argument("--budget-s", type=float, default=420,
                        help="start no new recipe after this many seconds (default 420)")
    parser.add_argument("--tiny-model", type=Path, default=None,
                        help="a tiny Llama already built by python -m llmops.jobs.make_tiny_model (default: build one)")
    args = parser.parse_args(argv)
    if args.tiny_model is not None and not (args.tiny_model / "config.json").is_file():
        parser.error(f"--tiny-model {args.tiny_model} has no config.json; fix: pass the folder "
                     "python -m llmops.jobs.make_tiny_model --out wrote, or leave the option out to build one")
    logging.basicConfig(level=logging.INFO, format="%(message)s", stream=sys.stdout)
    results = run(args.out, dry_run=args.dry_run, budget_s=args.budget_s, tiny_model=args.tiny_model)
    print((args.out / "gpu-check.md").read_text())
    return 1 if any(s["status"] == "failed" for s in results["steps"]) else 0


if __name__ == "__main__":
    sys.exit(main())
