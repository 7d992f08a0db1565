"""Serving: vLLM Kubernetes manifests (`manifests`) and the local runtime of real vLLM processes (`local`)."""
