"""The Kubernetes version ACK runs for this project: `kubernetes_version` of deploy/ack/values.yaml, the one
version every rendered object is validated against (kubernetes-validate)."""

from __future__ import annotations

from pathlib import Path

import yaml

KUBERNETES_VERSION: str = str(yaml.safe_load(
    (Path(__file__).resolve().parents[2] / "deploy" / "ack" / "values.yaml").read_text())["kubernetes_version"])
