"""Serving: where a model version runs, and the port the rollout driver acts through.

    port.py        the rollout port (RolloutBackend, Readiness, WaitTarget) and the pre-flight Problem
    local.py       the local runtime: real vLLM processes on 127.0.0.1, itself a RolloutBackend
    kubernetes.py  the Kubernetes backend: applies, patches and deletes those objects at each plan action
    manifests.py   the Kubernetes objects of a deployment (vLLM Deployment, Service, HPA, HTTPRoute, ...)
    trtllm.py      the trtllm-serve container of a TensorRT-LLM deployment
    capacity.py    whether the canary's replicas fit the GPU pool (pure)
    launcher.py    the vLLM command line and environment, a free port (also for the validate step)
    processes.py   is a server alive, which processes are its, stop all of them
"""
