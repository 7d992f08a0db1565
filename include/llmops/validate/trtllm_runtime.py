"""Greedy completions with TensorRT-LLM's LLM API (PyTorch backend). GPU pods only (images/trtllm).

Current TensorRT-LLM loads the ModelOpt unified checkpoint (hf_quant_config.json) directly.
"""

from __future__ import annotations

import importlib.util
from pathlib import Path

from llmops.hardware import cuda_available


def unavailable_reason() -> str | None:
    """Why TensorRT-LLM cannot validate here, or None when it can."""
    if importlib.util.find_spec("tensorrt_llm") is None:
        return "TensorRT-LLM is not installed here (it has no CPU build); it validates in the images/trtllm pod"
    if not cuda_available():
        return "no CUDA GPU here; TensorRT-LLM validates on a GPU pod (runtime kubernetes)"
    return None


def greedy_generations(checkpoint: Path, prompt_token_ids: list[list[int]], max_new_tokens: int, *,
                       max_model_len: int, tensor_parallel_size: int = 1,
                       trust_remote_code: bool = False) -> list[dict]:
    """Greedy continuations of the reference's prompt token ids: [{"token_ids", "text"}]."""
    from tensorrt_llm import LLM, SamplingParams

    llm = LLM(model=str(checkpoint), tensor_parallel_size=tensor_parallel_size, max_seq_len=max_model_len,
              trust_remote_code=trust_remote_code)
    try:
        outputs = llm.generate([list(ids) for ids in prompt_token_ids],
                               SamplingParams(max_tokens=max_new_tokens, temperature=0.0))
        return [{"token_ids": list(o.outputs[0].token_ids), "text": o.outputs[0].text} for o in outputs]
    finally:
        llm.shutdown()
