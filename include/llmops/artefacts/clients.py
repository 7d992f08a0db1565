"""The one way this project builds S3 (boto3) and OSS (oss2) clients from `open_store`-style credentials.

Used by the artefact store's backends and by knowledge-base sources, so a bucket is reached with the same
rule everywhere: explicit keys when given, otherwise the SDK's own chain (environment, RRSA / IRSA), never
anything in code. The credential keys are those of `open_store` (see `credentials.ENV_NAMES` for their
environment names). OSS requests are signed with V4 when a region is known, V1 otherwise.
"""

from __future__ import annotations

from collections.abc import Mapping

from llmops.artefacts.errors import StoreUriError

S3_KEYS = frozenset({"endpoint_url", "access_key_id", "secret_access_key", "session_token", "region",
                     "addressing_style"})
OSS_KEYS = frozenset({"endpoint", "access_key_id", "access_key_secret", "security_token", "region",
                      "connect_timeout"})
#: the credential key that holds the endpoint, per scheme
ENDPOINT_KEY = {"s3": "endpoint_url", "oss": "endpoint"}


def check_credentials(scheme: str, credentials: Mapping[str, object]) -> None:
    """Refuse keys the client would not use (a typo would otherwise be ignored silently)."""
    known = S3_KEYS if scheme == "s3" else OSS_KEYS
    unknown = set(credentials) - known
    if unknown:
        raise StoreUriError(f"{scheme} credentials have unknown keys {sorted(unknown)}; fix: use {sorted(known)}")


def s3_client(credentials: Mapping[str, object], *, pool_size: int = 10):
    """A boto3 S3 client: path-style addressing for a custom endpoint, standard retries."""
    import boto3
    from botocore.config import Config

    check_credentials("s3", credentials)
    creds = credentials
    style = creds.get("addressing_style") or ("path" if creds.get("endpoint_url") else "auto")
    return boto3.session.Session().client(
        "s3",
        endpoint_url=creds.get("endpoint_url"),
        aws_access_key_id=creds.get("access_key_id"),
        aws_secret_access_key=creds.get("secret_access_key"),
        aws_session_token=creds.get("session_token"),
        region_name=creds.get("region") or "us-east-1",
        config=Config(s3={"addressing_style": style}, max_pool_connections=pool_size,
                      retries={"mode": "standard", "max_attempts": 5}),
    )


def oss_bucket(bucket: str, credentials: Mapping[str, object], *, pool_size: int = 10):
    """An oss2 Bucket with CRC64 checks on. Needs `endpoint` (checked by `check_credentials` callers first)."""
    import oss2
    from oss2.credentials import EnvironmentVariableCredentialsProvider, StaticCredentialsProvider

    check_credentials("oss", credentials)
    creds = credentials
    if creds.get("access_key_id"):
        provider = StaticCredentialsProvider(creds["access_key_id"], creds.get("access_key_secret"),
                                             creds.get("security_token") or "")
    else:  # RRSA / environment: OSS_ACCESS_KEY_ID, OSS_ACCESS_KEY_SECRET, OSS_SESSION_TOKEN
        provider = EnvironmentVariableCredentialsProvider()
    region = creds.get("region") or None
    auth = oss2.ProviderAuthV4(provider) if region else oss2.ProviderAuth(provider)
    return oss2.Bucket(auth, creds["endpoint"], bucket, enable_crc=True, session=oss2.Session(pool_size=pool_size),
                       connect_timeout=creds.get("connect_timeout", 60), region=region)
