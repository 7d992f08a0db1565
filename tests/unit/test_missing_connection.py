"""A missing optional Connection is recognised by Airflow's own "not found" exception and nothing else.

The four places that look a Connection up (the step factory's secret_env, the artefact store hook, the Hugging
Face hook, the alert notifier) treat AirflowNotFoundException as "not configured"; any other failure of the
lookup (here a secrets backend that denies access, replaced by a stand-in raising it: no such backend runs
here) surfaces instead of being read as "no Connection".
"""

from __future__ import annotations

import pytest
from airflow.sdk import BaseHook
from airflow.sdk.exceptions import AirflowNotFoundException

from llmops_airflow.hooks.artefacts import ArtefactStoreHook
from llmops_airflow.hooks.huggingface import HuggingFaceHook
from llmops_airflow.notifiers import WebhookNotifier
from llmops_airflow.steps import resolve_secret_env

LOOKUPS = {
    "secret_env": lambda: resolve_secret_env({"HF_TOKEN": "llmops_absent_conn.password"}),
    "artefact store": lambda: ArtefactStoreHook("llmops_absent_conn", store_uri="s3://bucket/prefix").credentials(),
    "hugging face": lambda: HuggingFaceHook("llmops_absent_conn").token_and_mirror(),
    "alerts": lambda: WebhookNotifier("llmops_absent_conn")._connection(),
}


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_a_missing_connection_is_optional(lookup, monkeypatch):
    monkeypatch.delenv("AIRFLOW_CONN_LLMOPS_ABSENT_CONN", raising=False)
    assert LOOKUPS[lookup]() in ({}, None, (None, None))


class BackendDown(Exception):
    pass


@pytest.mark.parametrize("lookup", LOOKUPS)
def test_any_other_lookup_failure_surfaces(lookup, monkeypatch):
    def failing(cls, conn_id):
        raise BackendDown(f"secrets backend refused {conn_id}")

    monkeypatch.setattr(BaseHook, "get_connection", classmethod(failing))
    with pytest.raises(BackendDown):
        LOOKUPS[lookup]()
    assert not issubclass(BackendDown, AirflowNotFoundException)
