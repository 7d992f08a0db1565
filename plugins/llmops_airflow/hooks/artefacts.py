"""ArtefactStoreHook: the artefact store (`LLMOPS_STORE_URI`) with credentials from a Connection.

Connection `llmops_artefacts` (optional):
- S3 or OSS's S3-compatible endpoint: conn_type `aws`, login/password = access key id/secret,
  extra `{"endpoint_url": ..., "region_name": ...}`
- OSS through oss2: login/password = AccessKey id/secret, extra `{"endpoint": ..., "region": ...}`
Without it the SDKs' default chain applies (environment variables, RRSA in ACK pods). A job that opens
the store itself gets these credentials as its environment (`job_env`, see llmops.artefacts.credentials).
"""

from __future__ import annotations

from airflow.sdk import BaseHook

from llmops.artefacts import open_store
from llmops.settings import get_settings

DEFAULT_CONN_ID = "llmops_artefacts"


class ArtefactStoreHook(BaseHook):
    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    hook_name = "llmops artefact store"

    def __init__(self, conn_id: str = DEFAULT_CONN_ID, store_uri: str | None = None):
        super().__init__()
        self.conn_id = conn_id
        self.store_uri = store_uri or get_settings().store_uri
        self._store = None

    def credentials(self) -> dict:
        scheme = self.store_uri.split("://", 1)[0]
        if scheme == "file":
            return {}
        from airflow.sdk.exceptions import AirflowNotFoundException

        try:
            conn = self.get_connection(self.conn_id)
        except AirflowNotFoundException:  # optional: fall back to the SDK's default credential chain
            return {}
        extra = conn.extra_dejson or {}
        if scheme == "s3":
            found = {"access_key_id": conn.login, "secret_access_key": conn.password,
                     "endpoint_url": extra.get("endpoint_url") or conn.host,
                     "region": extra.get("region_name") or extra.get("region"),
                     "session_token": extra.get("aws_session_token")}
        else:
            found = {"access_key_id": conn.login, "access_key_secret": conn.password,
                     "endpoint": extra.get("endpoint") or extra.get("endpoint_url") or conn.host,
                     "region": extra.get("region") or extra.get("region_name"),
                     "security_token": extra.get("security_token")}
        return {key: value for key, value in found.items() if value}

    def job_env(self) -> dict[str, str]:
        """The credentials as the environment of a job that opens the store itself (publish, fetch)."""
        from llmops.artefacts.credentials import credentials_to_env

        return credentials_to_env(self.store_uri, self.credentials())

    def get_conn(self):
        if self._store is None:
            self._store = open_store(self.store_uri, credentials=self.credentials())
        return self._store

    def test_connection(self) -> tuple[bool, str]:
        try:
            self.get_conn().list_versions("__connection_test__")
        except Exception as exc:
            return False, f"{self.store_uri}: {type(exc).__name__}: {exc}"
        return True, f"{self.store_uri}: reachable"
