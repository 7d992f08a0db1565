"""How this project starts a vLLM OpenAI-compatible server: the command, its environment, a free port.

One launcher for every local vLLM: the local serving runtime's stable and canary servers
(`llmops.serving.local`) and the one-shot server of the validate step (`llmops.validate.vllm_server`).
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
from pathlib import Path

from llmops.hardware import cuda_available
from llmops.serving.processes import TAG_VARIABLE, start_owned
from llmops.settings import child_environment

log = logging.getLogger(__name__)


def cpu_halves() -> tuple[str, str]:
    """Two disjoint CPU sets (VLLM_CPU_OMP_THREADS_BIND lists) from the CPUs this process may use; the same
    set twice when it may use only one."""
    cpus = sorted(os.sched_getaffinity(0))
    if len(cpus) < 2:
        return ",".join(map(str, cpus)), ",".join(map(str, cpus))
    half = len(cpus) // 2
    return ",".join(map(str, cpus[:half])), ",".join(map(str, cpus[half:]))


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def default_dtype() -> str | None:
    """The --dtype this project serves with: bfloat16 on CPU, the checkpoint's own (None: not passed) on GPU."""
    return None if cuda_available() else "bfloat16"


def vllm_command(python: str, model_dir: Path | str, *, served_name: str, port: int, max_model_len: int,
                 tensor_parallel_size: int = 1, extra_args: list[str] | tuple[str, ...] = (),
                 dtype: str | None = None, cpus: str = "") -> tuple[list[str], dict[str, str]]:
    """The command and environment this project starts a vLLM OpenAI-compatible server with.

    `python -m vllm.entrypoints.openai.api_server`, since `vllm serve` does not exist for the vllm-cpu
    distribution. On CPU: bfloat16, because vLLM's CPU int8/int4 kernels take bfloat16 activations
    ("int8_scaled_mm_with_quant: expect A to be bfloat16 or half" under float32), and a 1 GiB KV cache
    instead of the default 4. `dtype` overrides that choice (the validation benchmark serves one side in float32).
    `cpus` (CPU only, e.g. "0" or "2,3") pins the server's OpenMP threads there (`VLLM_CPU_OMP_THREADS_BIND`);
    without it vLLM's `auto` binds every server to the same first core.
    """
    command = [python, "-m", "vllm.entrypoints.openai.api_server", "--model", str(model_dir),
               "--served-model-name", served_name, "--host", "127.0.0.1", "--port", str(port),
               "--max-model-len", str(max_model_len), "--tensor-parallel-size", str(tensor_parallel_size)]
    env = child_environment()
    dtype = dtype or default_dtype()
    if dtype:
        command += ["--dtype", dtype]
    if not cuda_available():
        env.setdefault("VLLM_CPU_KVCACHE_SPACE", "1")
        if cpus:
            env["VLLM_CPU_OMP_THREADS_BIND"] = cpus
    return [*command, *extra_args], env


def start_vllm(python: str, model_dir: Path | str, *, served_name: str, port: int, max_model_len: int,
               log_path: Path, tensor_parallel_size: int = 1, extra_args: list[str] | tuple[str, ...] = (),
               tag: str = "", cwd: Path | None = None, owned: bool = False,
               dtype: str | None = None, cpus: str = "") -> subprocess.Popen:
    """Start vLLM on 127.0.0.1:`port` in a session of its own, its output appended to `log_path`.

    `tag` (with `cwd`, the server's own working directory) marks the server and all its children, so
    `llmops.serving.processes.stop_process` finds every one of them. `owned`: the server (API server, engine,
    workers) dies with this process however it ends (`llmops.serving.processes.start_owned`), for a server
    that lives only as long as its caller (the validate step's); the local runtime's stable and canary
    outlive the task that starts them and are not owned."""
    command, env = vllm_command(python, model_dir, served_name=served_name, port=port, max_model_len=max_model_len,
                                tensor_parallel_size=tensor_parallel_size, extra_args=extra_args, dtype=dtype,
                                cpus=cpus)
    if tag:
        env[TAG_VARIABLE] = tag
    log.info("starting vLLM: %s", " ".join(command))
    with open(log_path, "ab") as out:
        if owned:
            return start_owned(command, stdout=out, stderr=subprocess.STDOUT, env=env, cwd=cwd)
        return subprocess.Popen(command, stdout=out, stderr=subprocess.STDOUT, env=env, start_new_session=True,
                                cwd=cwd)
