"""The API server's name rules (k8s.io/apimachinery/pkg/util/validation), for tests that check every name the project
renders: kubernetes-validate checks schemas, and the OpenAPI schema has no pattern for names or labels.

`name_problems(obj)` returns one line per name, label or port name of a rendered object the API server would refuse.
"""

from __future__ import annotations

import re
from typing import Any

DNS1123_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?")
DNS1123_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
DNS1035_LABEL = re.compile(r"[a-z]([-a-z0-9]*[a-z0-9])?")
QUALIFIED_NAME = re.compile(r"([A-Za-z0-9][-A-Za-z0-9_.]*)?[A-Za-z0-9]")
IANA_SVC_NAME = re.compile(r"[a-z0-9]([a-z0-9-]*[a-z0-9])?")
# Kinds whose metadata.name is a DNS-1035 label (Services) or a DNS-1123 label (Namespaces); every other kind the
# project renders takes a DNS-1123 subdomain.
DNS1035_KINDS = {"Service"}
DNS1123_LABEL_KINDS = {"Namespace"}


def _label_name(value: str, limit: int, pattern: re.Pattern) -> bool:
    return 0 < len(value) <= limit and pattern.fullmatch(value) is not None


def object_name_problem(kind: str, name: str) -> str | None:
    if kind in DNS1035_KINDS:
        if not _label_name(name, 63, DNS1035_LABEL):
            return f"{kind} name {name!r} is not a DNS-1035 label (a letter first, [-a-z0-9], at most 63)"
    elif kind in DNS1123_LABEL_KINDS:
        if not _label_name(name, 63, DNS1123_LABEL):
            return f"{kind} name {name!r} is not a DNS-1123 label ([-a-z0-9], at most 63)"
    elif not _label_name(name, 253, DNS1123_SUBDOMAIN):
        return f"{kind} name {name!r} is not a DNS-1123 subdomain ([-.a-z0-9], at most 253)"
    return None


def label_problems(labels: dict[str, str], where: str) -> list[str]:
    out = []
    for key, value in labels.items():
        prefix, _, name = key.rpartition("/")
        if prefix and not _label_name(prefix, 253, DNS1123_SUBDOMAIN):
            out.append(f"{where}: label key prefix {prefix!r} is not a DNS-1123 subdomain")
        if not _label_name(name, 63, QUALIFIED_NAME):
            out.append(f"{where}: label key {key!r} is not a qualified name")
        if value and not _label_name(value, 63, QUALIFIED_NAME):
            out.append(f"{where}: label {key}={value!r} is not a valid label value (at most 63, alphanumeric ends)")
    return out


def _pod_spec(obj: dict) -> dict | None:
    if obj.get("kind") == "Pod":
        return obj.get("spec")
    template = (obj.get("spec") or {}).get("template")
    return template.get("spec") if isinstance(template, dict) else None


def name_problems(obj: dict[str, Any]) -> list[str]:
    kind, metadata = obj["kind"], obj.get("metadata") or {}
    where = f"{kind}/{metadata.get('name')}"
    problems = [p for p in [object_name_problem(kind, metadata.get("name", ""))] if p]
    if metadata.get("namespace") is not None and not _label_name(metadata["namespace"], 63, DNS1123_LABEL):
        problems.append(f"{where}: namespace {metadata['namespace']!r} is not a DNS-1123 label")
    problems += label_problems(metadata.get("labels") or {}, where)
    spec = obj.get("spec") or {}
    template = spec.get("template") if isinstance(spec.get("template"), dict) else None
    if template:
        problems += label_problems((template.get("metadata") or {}).get("labels") or {}, f"{where} pod template")
    if isinstance(spec.get("selector"), dict):
        problems += label_problems(spec["selector"].get("matchLabels", spec["selector"]), f"{where} selector")
    pod = _pod_spec(obj)
    if pod:
        for field in ("initContainers", "containers"):
            for container in pod.get(field) or []:
                if not _label_name(container["name"], 63, DNS1123_LABEL):
                    problems.append(f"{where}: container name {container['name']!r} is not a DNS-1123 label")
                for port in container.get("ports") or []:
                    if "name" in port and not (_label_name(port["name"], 15, IANA_SVC_NAME)
                                               and re.search("[a-z]", port["name"])):
                        problems.append(f"{where}: port name {port['name']!r} is not an IANA service name")
        for volume in pod.get("volumes") or []:
            if not _label_name(volume["name"], 63, DNS1123_LABEL):
                problems.append(f"{where}: volume name {volume['name']!r} is not a DNS-1123 label")
    if kind == "Service":
        for port in spec.get("ports") or []:
            if "name" in port and not _label_name(port["name"], 15, IANA_SVC_NAME):
                problems.append(f"{where}: port name {port['name']!r} is not an IANA service name")
    return problems
