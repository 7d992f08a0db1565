"""TensorRT-LLM's LLM API (PyTorch backend) on a checkpoint: greedy continuations and teacher-forced top-k
logprobs. GPU pods only (images/trtllm); no CPU build exists, so nothing here runs on the development machines.

Current TensorRT-LLM loads the ModelOpt unified checkpoint (hf_quant_config.json) and a plain Hugging Face
checkpoint (the reference) directly. Loading may take long (kernels compile on first use): it gets
`LLMOPS_TRTLLM_READY_TIMEOUT_S` (llmops.serving.ready), transient once like vLLM's start.
"""

from __future__ import annotations

import contextlib
import importlib.util
import threading
from collections.abc import Iterator
from pathlib import Path

from llmops.hardware import cuda_available
from llmops.serving.ready import ReadyLimit

#: Top-k logprobs kept per position, the same as vLLM's validation.
TOP_K = 20


def unavailable_reason() -> str | None:
    """Why TensorRT-LLM cannot validate here, or None when it can."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "TensorRT-LLM is not installed here (it has no CPU build); it validates in the images/trtllm pod"
    if not cuda_available():
        return "no CUDA GPU here; TensorRT-LLM validates on a GPU pod (runtime kubernetes)"
    return None


def server_flags(*, max_model_len: int, tensor_parallel_size: int = 1, trust_remote_code: bool = False) -> dict:
    """How validation loads a checkpoint in TensorRT-LLM, reference and candidate alike (the reference's key)."""
    return {"dtype": "auto", "max_model_len": max_model_len, "tensor_parallel_size": tensor_parallel_size,
            "args": ["trust_remote_code"] if trust_remote_code else []}


@contextlib.contextmanager
def trtllm_model(checkpoint: Path, flags: dict, *, ready: ReadyLimit | None = None) -> Iterator[object]:
    """An LLM on `checkpoint`, loaded within the ready limit; shut down afterwards."""
    from tensorrt_llm import LLM

    ready = ready or ReadyLimit.trtllm()
    loaded: dict = {}

    def load() -> None:
        try:
            loaded["llm"] = LLM(model=str(checkpoint), tensor_parallel_size=flags["tensor_parallel_size"],
                                max_seq_len=flags["max_model_len"],
                                trust_remote_code="trust_remote_code" in flags["args"])
        except BaseException as exc:  # noqa: BLE001 - handed to the waiting thread
            loaded["error"] = exc

    # The LLM API has no load timeout: load in a daemon thread and stop waiting at the limit (the job then exits,
    # and the pod with it).
    worker = threading.Thread(target=load, daemon=True, name="trtllm-load")
    worker.start()
    worker.join(ready.limit)
    if worker.is_alive():
        raise ready.expired(f"TensorRT-LLM loading {checkpoint}")
    if "error" in loaded:
        raise loaded["error"]
    ready.succeeded()
    llm = loaded["llm"]
    try:
        yield llm
    finally:
        llm.shutdown()


def greedy_generations(llm, prompt_token_ids: list[list[int]], max_new_tokens: int) -> list[dict]:
    """Greedy continuations of the prompt token ids: [{"prompt_token_ids", "token_ids", "text"}]."""
    from tensorrt_llm import SamplingParams

    outputs = llm.generate([list(ids) for ids in prompt_token_ids],
                           SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
    return [{"prompt_token_ids": list(ids), "token_ids": list(o.outputs[0].token_ids), "text": o.outputs[0].text}
            for ids, o in zip(prompt_token_ids, outputs, strict=True)]


def tokenize(llm, prompts: list[str]) -> list[list[int]]:
    return [list(llm.tokenizer.encode(prompt)) for prompt in prompts]


def teacher_forced_logprobs(llm, prompt_token_ids: list[int], continuation: list[int], *, top_k: int = TOP_K
                            ) -> list[dict[int, float]]:
    """Top-k logprobs at each continuation token from the context logits of prompt + continuation (row
    len(prompt) + i - 1 predicts continuation token i), log-softmax over the full vocabulary in float32."""
    import torch
    from tensorrt_llm import SamplingParams

    if not continuation:
        return []
    output = llm.generate([[*prompt_token_ids, *continuation]],
                          SamplingParams(max_tokens=1, temperature=0.0, return_context_logits=True))[0]
    logits = output.context_logits
    rows = torch.log_softmax(logits.float(), dim=-1)[len(prompt_token_ids) - 1:-1]
    values, indices = torch.topk(rows, top_k, dim=-1)
    return [{int(t): float(v) for t, v in zip(ids.tolist(), vals.tolist(), strict=True)}
            for ids, vals in zip(indices, values, strict=True)]
