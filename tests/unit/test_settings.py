"""The environment is read in one place, llmops.settings; credentials reach include/llmops as declared variables."""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

from llmops.artefacts.credentials import ENV_NAMES, credentials_from_env
from llmops.errors import LlmopsError, SettingsError
from llmops.settings import OBJECT_STORE_VARIABLES, get_settings

ROOT = Path(__file__).resolve().parents[2]
LIBRARY = ROOT / "include" / "llmops"
ENV_FUNCTIONS = {"environ", "environb", "getenv", "getenvb", "putenv", "unsetenv"}
#: Modules allowed to touch the process environment, and why. Nothing but settings, today.
ALLOWED = {"settings.py": "the one declared place"}


def environment_reads(path: Path) -> list[str]:
    """`os.environ`, `os.getenv`... (attribute or imported name) in one file, as 'file:line: name'."""
    found = []
    for node in ast.walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Attribute) and node.attr in ENV_FUNCTIONS and isinstance(node.value, ast.Name) \
                and node.value.id == "os":
            found.append(f"{path.relative_to(ROOT)}:{node.lineno}: os.{node.attr}")
        elif isinstance(node, ast.ImportFrom) and node.module == "os":
            found += [f"{path.relative_to(ROOT)}:{node.lineno}: from os import {a.name}"
                      for a in node.names if a.name in ENV_FUNCTIONS]
    return found


def test_only_settings_reads_the_environment():
    offenders = [read for path in sorted(LIBRARY.rglob("*.py"))
                 if str(path.relative_to(LIBRARY)) not in ALLOWED for read in environment_reads(path)]
    assert offenders == [], "read the variable in llmops/settings.py and take it from get_settings()"


def test_the_check_finds_a_read(tmp_path):
    bad = tmp_path / "include" / "bad.py"
    bad.parent.mkdir()
    bad.write_text("import os\nfrom os import getenv\nx = os.environ.get('X')\ny = os.getenv('Y')\n")
    global ROOT
    saved, ROOT = ROOT, tmp_path
    try:
        assert len(environment_reads(bad)) == 3
    finally:
        ROOT = saved


def test_declared_variables_are_read_and_credentials_never_shown(monkeypatch):
    monkeypatch.setenv("HF_ENDPOINT", "http://mirror.example")
    monkeypatch.setenv("MILVUS_URI", "http://milvus.example:19530")
    monkeypatch.setenv("HF_TOKEN", "hf_s3cret")
    monkeypatch.setenv("MILVUS_TOKEN", "root:s3cret")
    monkeypatch.setenv("OSS_ACCESS_KEY_SECRET", "oss-s3cret")
    monkeypatch.setenv("OSS_ENDPOINT", "https://oss-cn-hangzhou.aliyuncs.com")
    settings = get_settings()
    assert (settings.hf_endpoint, settings.milvus_default_uri) == ("http://mirror.example", "http://milvus.example:19530")
    assert (settings.credentials.hf_token, settings.credentials.milvus_token) == ("hf_s3cret", "root:s3cret")
    assert settings.credentials.object_store["OSS_ENDPOINT"] == "https://oss-cn-hangzhou.aliyuncs.com"
    assert settings.credentials.object_store["OSS_ACCESS_KEY_SECRET"] == "oss-s3cret"
    assert "s3cret" not in repr(settings) and "s3cret" not in repr(settings.credentials)


def test_no_airflow_connection_format_is_parsed(monkeypatch):
    """AIRFLOW_CONN_* is Airflow's business: plugins resolve Connections and declare what a job gets."""
    for name in ("MILVUS_TOKEN", "HF_TOKEN", *OBJECT_STORE_VARIABLES):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("AIRFLOW_CONN_MILVUS_DEFAULT", json.dumps({"conn_type": "generic", "password": "p"}))
    monkeypatch.setenv("AIRFLOW_CONN_LLMOPS_ARTEFACTS", json.dumps({"conn_type": "aws", "login": "k", "password": "s"}))
    credentials = get_settings().credentials
    assert (credentials.milvus_token, credentials.hf_token, dict(credentials.object_store)) == ("", "", {})
    assert credentials_from_env("s3://bucket/prefix") == {}


def test_every_store_credential_variable_is_declared():
    names = {name for scheme in ENV_NAMES.values() for name in scheme.values()}
    assert names <= set(OBJECT_STORE_VARIABLES)


def test_a_bad_runtime_is_a_domain_error_with_its_fix(monkeypatch):
    monkeypatch.setenv("LLMOPS_RUNTIME", "nomad")
    with pytest.raises(SettingsError) as refused:
        get_settings()
    assert isinstance(refused.value, LlmopsError) and "local, kubernetes" in refused.value.fix
    assert str(refused.value).startswith("LLMOPS_RUNTIME='nomad' is not a runtime; fix: ")
