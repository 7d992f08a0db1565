"""Kubernetes label selectors (matchLabels and matchExpressions) evaluated as the API server does, for tests that
check which objects a Service, monitor or policy selects (kmock ignores selectors)."""

from __future__ import annotations


def selects(selector: dict, labels: dict[str, str]) -> bool:
    """Whether a LabelSelector (matchLabels / matchExpressions) matches `labels`."""
    if any(labels.get(key) != value for key, value in (selector.get("matchLabels") or {}).items()):
        return False
    for expression in selector.get("matchExpressions") or []:
        key, operator, values = expression["key"], expression["operator"], expression.get("values") or []
        present, value = key in labels, labels.get(key)
        ok = {"In": present and value in values, "NotIn": value not in values, "Exists": present,
              "DoesNotExist": not present}
        if not ok[operator]:
            return False
    return True
