"""A real SeaweedFS S3 server on 127.0.0.1 for tests and benchmarks.

    with seaweed_server(tmp_path) as s3:
        make_bucket(s3, "artefacts")
        open_store("s3://artefacts/root", credentials=s3.credentials)

By default no identities are configured, so SeaweedFS accepts any key pair (clients still sign requests).
`seaweed_server(enforce_credentials=True)` starts it with an S3 identity config (`-s3.config`): only
`server.access_key` / `server.secret_key` are accepted, anything else is refused with an S3 error
(InvalidAccessKeyId / SignatureDoesNotMatch). Use it when a test must prove credentials really arrive.
"""

from __future__ import annotations

import contextlib
import json
import secrets
import subprocess
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

from support._proc import STANDINS_BIN, free_ports, http_ok, start_owned, stop, wait_until


@dataclass(frozen=True)
class S3Server:
    endpoint_url: str
    pid: int
    data_dir: Path
    access_key: str = "test-access-key"
    secret_key: str = "test-secret-key"
    region: str = "us-east-1"
    ports: dict[str, int] = field(default_factory=dict)

    @property
    def credentials(self) -> dict:
        """The `credentials` mapping `llmops.artefacts.open_store` takes for s3:// URIs."""
        return {"endpoint_url": self.endpoint_url, "access_key_id": self.access_key,
                "secret_access_key": self.secret_key, "region": self.region}

    def client(self):
        import boto3
        from botocore.config import Config

        return boto3.client("s3", endpoint_url=self.endpoint_url, aws_access_key_id=self.access_key,
                            aws_secret_access_key=self.secret_key, region_name=self.region,
                            config=Config(s3={"addressing_style": "path"}))


def make_bucket(server: S3Server, name: str) -> str:
    client = server.client()
    with contextlib.suppress(client.exceptions.BucketAlreadyOwnedByYou, client.exceptions.BucketAlreadyExists):
        client.create_bucket(Bucket=name)
    return name


@contextlib.contextmanager
def seaweed_server(data_dir: Path | None = None, *, timeout: float = 60,
                   enforce_credentials: bool = False) -> Iterator[S3Server]:
    """Start `weed server -s3` with every port free and random; stop it (SIGKILL if SIGTERM hangs).

    enforce_credentials: only a random key pair (the server's access_key/secret_key) is accepted.
    """
    with contextlib.ExitStack() as stack:
        if data_dir is None:
            data_dir = Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="seaweed-")))
        data_dir = Path(data_dir)
        data_dir.mkdir(parents=True, exist_ok=True)
        names = ["master", "master.grpc", "volume", "volume.grpc", "filer", "filer.grpc", "s3", "s3.grpc",
                 "iam"]
        ports = dict(zip(names, free_ports(len(names)), strict=True))
        command = [
            str(STANDINS_BIN / "weed"), "server", f"-dir={data_dir}", "-ip=127.0.0.1", "-ip.bind=127.0.0.1",
            "-s3", "-volume.max=0", "-master.volumeSizeLimitMB=256", "-master.telemetry=false",
            # fixed default ports (8181, 9101) would clash between concurrent servers; we use neither
            "-s3.port.iceberg=0", "-s3.port.lance=0",
            *(f"-{name.replace('.grpc', '.port.grpc')}={port}" if name.endswith(".grpc") else f"-{name}.port={port}"
              for name, port in ports.items()),
        ]
        keys = {}
        if enforce_credentials:
            keys = {"access_key": "llmops-" + secrets.token_hex(6), "secret_key": secrets.token_urlsafe(24)}
            identities = data_dir / "s3-identities.json"
            identities.write_text(json.dumps({"identities": [{
                "name": "llmops", "actions": ["Admin", "Read", "Write", "List", "Tagging"],
                "credentials": [{"accessKey": keys["access_key"], "secretKey": keys["secret_key"]}]}]}))
            identities.chmod(0o600)
            command.append(f"-s3.config={identities}")
        log = data_dir / "weed.log"
        with open(log, "ab") as log_file:
            proc = start_owned(command, stdout=log_file, stderr=subprocess.STDOUT, cwd=data_dir)
        stack.callback(stop, proc, grace=2.0)  # weed often ignores SIGTERM: do not wait long
        endpoint = f"http://127.0.0.1:{ports['s3']}"
        server = S3Server(endpoint_url=endpoint, pid=proc.pid, data_dir=data_dir, ports=ports, **keys)

        def ready() -> bool:
            if not http_ok(endpoint):
                return False
            server.client().list_buckets()
            return True

        wait_until(ready, timeout=timeout, what="SeaweedFS (weed server -s3)", proc=proc, log=log)
        yield server
