"""Fixtures shared by the integration tests."""

from __future__ import annotations

import json

import pytest


@pytest.fixture
def kube(monkeypatch):
    """kmock's Kubernetes emulator, reached through the `kubernetes_default` Connection as the DAGs reach a cluster."""
    from support.kube_emulator import KubeEmulator

    with KubeEmulator() as emulator:
        conn = {"conn_type": "kubernetes", "extra": {"kube_config": json.dumps(emulator.kubeconfig)}}
        monkeypatch.setenv("AIRFLOW_CONN_KUBERNETES_DEFAULT", json.dumps(conn))
        yield emulator
