"""The ACK kit as the tests render it.

`KUBERNETES_VERSION`: `kubernetes_version` of deploy/ack/values.yaml, the one version every rendered object is
validated against (kubernetes-validate). `render_kit(out)`: deploy/ack/render.py run on the shipped values with
every placeholder image digest filled in (render.py refuses placeholders), as a user's values file would be.
"""

from __future__ import annotations

import hashlib
import re
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]
KIT = ROOT / "deploy" / "ack"
VALUES_TEXT = (KIT / "values.yaml").read_text()
KUBERNETES_VERSION: str = str(yaml.safe_load(VALUES_TEXT)["kubernetes_version"])


def filled_values_text() -> str:
    """The shipped values with each placeholder digest replaced by a well-formed one (sha256 of the placeholder)."""
    return re.sub(r"sha256:replace[-a-z0-9.]*",
                  lambda m: "sha256:" + hashlib.sha256(m.group(0).encode()).hexdigest(), VALUES_TEXT)


def render_kit(out: Path, values_text: str | None = None) -> list[dict]:
    """Render the kit into `out` (with the filled values unless `values_text`) and return its objects in the
    README's order (Helm values files, *-values.yaml, left out)."""
    out.mkdir(parents=True, exist_ok=True)
    values = out.parent / f"{out.name}-values.yaml"
    values.write_text(values_text if values_text is not None else filled_values_text())
    subprocess.run([sys.executable, str(KIT / "render.py"), "--values", str(values), "--out", str(out)], check=True,
                   capture_output=True)
    docs = []
    for path in sorted(out.glob("*.yaml")):
        if not path.name.endswith("-values.yaml"):
            docs += [d for d in yaml.safe_load_all(path.read_text()) if d]
    return docs
