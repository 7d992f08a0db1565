"""HuggingFaceHook: the token and the mirror endpoint of a model's Hugging Face Connection.

Connection `huggingface_default` (or a model's `hf_connection_id`), optional, type generic:
- host: the hub or a mirror, as a URL (e.g. `https://hf-mirror.com`, `http://olah:8090`); a host
  without a scheme gets `https://` (and the Connection's port, if any). Used when neither the model's
  `endpoint` in models.yaml nor `HF_ENDPOINT` is set (llmops.hub.hub_endpoint).
- password: the access token (never logged).
"""

from __future__ import annotations

from airflow.sdk import BaseHook

DEFAULT_CONN_ID = "huggingface_default"


def connection_url(host: str | None, port: int | None = None, default_scheme: str = "https") -> str | None:
    """A Connection's host as a URL: kept when it has a scheme, else `<default_scheme>://host[:port]`."""
    host = (host or "").strip().rstrip("/")
    if not host:
        return None
    if "://" in host:
        return host
    return f"{default_scheme}://{host}" + (f":{port}" if port else "")


class HuggingFaceHook(BaseHook):
    conn_name_attr = "conn_id"
    default_conn_name = DEFAULT_CONN_ID
    conn_type = "generic"
    hook_name = "Hugging Face hub or mirror (llmops)"

    def __init__(self, conn_id: str | None = DEFAULT_CONN_ID):
        super().__init__()
        self.conn_id = conn_id

    def _connection(self):
        from airflow.sdk.exceptions import AirflowNotFoundException

        if not self.conn_id:
            return None
        try:
            return self.get_connection(self.conn_id)
        except AirflowNotFoundException:  # optional: anonymous access to the default endpoint
            return None

    def token_and_mirror(self) -> tuple[str | None, str | None]:
        """(token, mirror URL) from the Connection; (None, None) when it does not exist."""
        conn = self._connection()
        if conn is None:
            return None, None
        return conn.password or None, connection_url(conn.host, conn.port)
