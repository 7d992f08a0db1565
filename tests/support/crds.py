"""Custom resources validated against the CRDs vendored in tests/unit/data/crds/ (each file's SOURCE header names
the project, tag and commit it was copied from).

A CRD's `openAPIV3Schema` is turned into a JSON schema the way `kubectl apply --validate=strict` treats it: an
object schema with `properties` and no `x-kubernetes-preserve-unknown-fields` refuses unknown fields (the API
server would drop them silently, so a misspelt field is an error here); `nullable` allows null. CEL rules
(`x-kubernetes-validations`) are not evaluated. kinds without a public CRD (ClusterAliyunPipelineConfig) have a
hand-written JSON schema in the same folder, named <group>_<version>_<Kind>.yaml.
"""

from __future__ import annotations

import copy
from functools import cache
from pathlib import Path
from typing import Any

import jsonschema
import yaml

CRDS = Path(__file__).resolve().parents[1] / "unit" / "data" / "crds"
#: (apiVersion, kind) -> vendored file
FILES = {
    ("monitoring.coreos.com/v1", "ServiceMonitor"): "monitoring.coreos.com_servicemonitors.yaml",
    ("gateway.networking.k8s.io/v1", "HTTPRoute"): "gateway.networking.k8s.io_httproutes.yaml",
    ("milvus.io/v1beta1", "Milvus"): "milvus.io_milvuses.yaml",
    ("telemetry.alibabacloud.com/v1alpha1", "ClusterAliyunPipelineConfig"):
        "telemetry.alibabacloud.com_v1alpha1_ClusterAliyunPipelineConfig.yaml",
}
OBJECT_META = {"type": "object", "required": ["name"], "properties": {
    "name": {"type": "string", "maxLength": 253, "pattern": r"^[a-z0-9]([-a-z0-9.]*[a-z0-9])?$"},
    "namespace": {"type": "string", "maxLength": 63}, "labels": {"type": "object"},
    "annotations": {"type": "object"}}}


def _strict(schema: Any) -> Any:
    if isinstance(schema, list):
        return [_strict(s) for s in schema]
    if not isinstance(schema, dict):
        return schema
    out = {k: _strict(v) for k, v in schema.items() if not k.startswith("x-kubernetes-") and k != "nullable"}
    if schema.get("nullable") and "type" in out:
        out["type"] = [out["type"], "null"]
    if ("properties" in schema and "additionalProperties" not in schema
            and not schema.get("x-kubernetes-preserve-unknown-fields")):
        out["additionalProperties"] = False
    if schema.get("x-kubernetes-int-or-string"):
        out.pop("type", None)
        out.setdefault("anyOf", [{"type": "integer"}, {"type": "string"}])
    return out


@cache
def schema_for(api_version: str, kind: str) -> dict:
    doc = next(d for d in yaml.safe_load_all((CRDS / FILES[(api_version, kind)]).read_text()) if d)
    if doc.get("kind") != "CustomResourceDefinition":
        return doc  # a hand-written JSON schema
    group, version = api_version.split("/")
    assert doc["spec"]["group"] == group and doc["spec"]["names"]["kind"] == kind
    (served,) = [v for v in doc["spec"]["versions"] if v["name"] == version and v.get("served")]
    schema = _strict(copy.deepcopy(served["schema"]["openAPIV3Schema"]))
    schema["properties"]["metadata"] = OBJECT_META
    schema["properties"]["apiVersion"] = {"const": api_version}
    schema["properties"]["kind"] = {"const": kind}
    schema["required"] = sorted({*schema.get("required", []), "apiVersion", "kind", "metadata"})
    schema["additionalProperties"] = False
    return schema


def is_custom(obj: dict) -> bool:
    return (obj.get("apiVersion"), obj.get("kind")) in FILES


def validate_custom(obj: dict) -> None:
    """Raise jsonschema.ValidationError when `obj` does not validate against its vendored CRD."""
    jsonschema.validate(obj, schema_for(obj["apiVersion"], obj["kind"]))
