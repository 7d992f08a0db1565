"""Store credentials in a job's environment: the one mapping between `open_store` credentials and env names.

Airflow resolves the `llmops_artefacts` Connection (plugins' ArtefactStoreHook) and hands a job that
touches the store exactly these variables (locally as the subprocess's declared environment, on
Kubernetes from the optional Secret `llmops-llmops-artefacts`); the job turns them back into
`open_store` credentials. The names are the SDKs' own, so RRSA / IRSA / a shell with AWS_* set work
unchanged when no Connection exists.
"""

from __future__ import annotations

from collections.abc import Mapping
from urllib.parse import urlparse

from llmops.artefacts.errors import StoreAccessError

#: On Kubernetes, the optional Secret whose keys (these variable names) become the environment of every
#: container that opens the store (publish pods, the vLLM pods' fetch init container).
KUBERNETES_SECRET = "llmops-llmops-artefacts"

#: open_store credential key -> environment variable, per scheme.
ENV_NAMES: dict[str, dict[str, str]] = {
    "s3": {"access_key_id": "AWS_ACCESS_KEY_ID", "secret_access_key": "AWS_SECRET_ACCESS_KEY",
           "session_token": "AWS_SESSION_TOKEN", "endpoint_url": "AWS_ENDPOINT_URL", "region": "AWS_DEFAULT_REGION"},
    "oss": {"access_key_id": "OSS_ACCESS_KEY_ID", "access_key_secret": "OSS_ACCESS_KEY_SECRET",
            "security_token": "OSS_SESSION_TOKEN", "endpoint": "OSS_ENDPOINT", "region": "OSS_REGION"},
}


def _scheme(store_uri: str) -> str:
    return urlparse(store_uri).scheme


def credentials_to_env(store_uri: str, credentials: Mapping[str, str]) -> dict[str, str]:
    """{ENV: value} for a job, from `open_store` credentials (unknown or empty keys are left out)."""
    names = ENV_NAMES.get(_scheme(store_uri), {})
    return {names[key]: str(value) for key, value in credentials.items() if key in names and value}


def credentials_from_env(store_uri: str, environ: Mapping[str, str] | None = None) -> dict[str, str]:
    """`open_store` credentials from the variables the job was handed (settings' OBJECT_STORE_VARIABLES; empty for
    file:// or when nothing is set)."""
    if environ is None:
        from llmops.settings import get_settings

        environ = get_settings().credentials.object_store
    names = ENV_NAMES.get(_scheme(store_uri), {})
    found = {key: environ.get(name, "") for key, name in names.items()}
    if _scheme(store_uri) == "s3" and not found["region"]:
        found["region"] = environ.get("AWS_REGION", "")
    return {key: value for key, value in found.items() if value}


# S3 error codes (and the OSS ones, which share them) that mean "these credentials cannot do this".
_DENIED = {"AccessDenied", "InvalidAccessKeyId", "SignatureDoesNotMatch", "InvalidSecurity", "ExpiredToken",
           "InvalidToken", "TokenRefreshRequired", "AllAccessDisabled", "AccountProblem", "Forbidden"}


#: botocore's errors for "no usable credentials were found" (matched by name: no botocore import here).
_NO_CREDENTIALS = {"NoCredentialsError", "PartialCredentialsError", "CredentialRetrievalError"}


def access_error(exc: BaseException, store_uri: str) -> StoreAccessError | None:
    """A clear StoreAccessError when `exc` is the store refusing the credentials, or the SDK finding none (boto3
    or oss2), else None."""
    scheme = _scheme(store_uri)
    names = ", ".join(ENV_NAMES.get(scheme, {}).values())
    if type(exc).__name__ in _NO_CREDENTIALS:
        return StoreAccessError(
            f"{store_uri}: no credentials for the store ({type(exc).__name__}: {str(exc)[:200]})",
            fix="set the llmops_artefacts Connection's login/password, or, in pods, create the Secret "
            f"llmops-llmops-artefacts ({names}) or bind a RAM role by RRSA")
    response = getattr(exc, "response", None)
    code = ""
    if isinstance(response, dict):  # botocore ClientError
        code = str(response.get("Error", {}).get("Code", ""))
        status = response.get("ResponseMetadata", {}).get("HTTPStatusCode")
    else:  # oss2.exceptions.ServerError
        code, status = str(getattr(exc, "code", "") or ""), getattr(exc, "status", None)
    if code not in _DENIED and not (status == 403 and code in ("", "403")):
        return None
    return StoreAccessError(
        f"{store_uri}: the store refused the credentials ({code or status})", fix="check the llmops_artefacts "
        f"Connection's login/password and extra (endpoint, region), or, in pods, the Secret llmops-llmops-artefacts "
        f"({names}) or the RAM role bound by RRSA")
