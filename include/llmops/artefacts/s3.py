"""S3 backend (boto3): AWS S3, MinIO, SeaweedFS (any server with conditional writes and CRC32 checksums).

Every object carries a CRC32 the server checks on receipt and keeps (whole-object for single PUTs,
COMPOSITE for multipart uploads: the CRC32 of the parts' CRC32s, suffixed `-<parts>`); `head_object`
with `ChecksumMode=ENABLED` reports it, and manifests record it for rollout pre-flight. The manifest is
created with `If-None-Match: *`; a server that ignores or refuses conditional writes cannot hold
immutable versions, so publishing to it fails rather than risking two manifests.
"""

from __future__ import annotations

import base64
import zlib
from collections.abc import Iterator

from llmops.artefacts._object import ObjectStore, PartDone, RemoteObject
from llmops.artefacts.clients import check_credentials, s3_client
from llmops.artefacts.errors import ArtefactError, ArtefactIntegrityError


class S3Store(ObjectStore):
    scheme = "s3"

    def __init__(self, bucket: str, root: str, credentials: dict, **options):
        super().__init__(f"s3://{bucket}" + (f"/{root}" if root else ""), root, **options)
        self.bucket = bucket
        check_credentials("s3", credentials)
        self._credentials = credentials
        self._client = None

    @property
    def client(self):
        if self._client is None:
            self._client = s3_client(self._credentials, pool_size=max(10, self.threads * 2))
        return self._client

    @staticmethod
    def _code(exc: Exception) -> str:
        response = getattr(exc, "response", None) or {}
        return str(response.get("Error", {}).get("Code", "")) or str(
            response.get("ResponseMetadata", {}).get("HTTPStatusCode", ""))

    def _head(self, key: str) -> RemoteObject | None:
        from botocore.exceptions import ClientError

        try:
            head = self.client.head_object(Bucket=self.bucket, Key=key, ChecksumMode="ENABLED")
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise
        crc32 = head.get("ChecksumCRC32")
        return RemoteObject(size=head["ContentLength"], sha256=head.get("Metadata", {}).get("sha256"),
                            etag=head.get("ETag", ""), checksums={"crc32": crc32} if crc32 else {})

    @staticmethod
    def _b64(crc: int) -> str:
        return base64.b64encode(crc.to_bytes(4, "big")).decode()

    def _server_checksums(self, parts: list[tuple[int, int]], multipart: bool) -> dict[str, str]:
        if not multipart:
            return {"crc32": self._b64(parts[0][0])}
        composite = zlib.crc32(b"".join(crc.to_bytes(4, "big") for crc, _ in parts))
        return {"crc32": f"{self._b64(composite)}-{len(parts)}"}

    def _put_object(self, key: str, data: bytes, metadata: dict[str, str], *, if_absent: bool = False,
                    checksum: int | None = None) -> str | None:
        from botocore.exceptions import ClientError

        extra = {"IfNoneMatch": "*"} if if_absent else {}
        crc = self._b64(zlib.crc32(data) if checksum is None else checksum)
        try:
            return self.client.put_object(Bucket=self.bucket, Key=key, Body=data, Metadata=metadata,
                                          ChecksumCRC32=crc, **extra)["ETag"]
        except ClientError as exc:
            code = self._code(exc)
            if if_absent and code in ("PreconditionFailed", "412", "ConditionalRequestConflict", "409"):
                return None
            if if_absent and code in ("NotImplemented", "501"):
                raise ArtefactError(
                    f"s3://{self.bucket}/{key}: the server refuses conditional writes (If-None-Match: *), so two "
                    "publishers could both write this version's manifest; nothing was published; fix: use a server "
                    "that supports them (AWS S3, MinIO, SeaweedFS) or the oss:// backend") from None
            raise

    def _find_upload(self, key: str) -> str | None:
        uploads = self.client.list_multipart_uploads(Bucket=self.bucket, Prefix=key).get("Uploads", [])
        mine = sorted((u for u in uploads if u["Key"] == key), key=lambda u: u["Initiated"])
        return mine[-1]["UploadId"] if mine else None

    def _create_upload(self, key: str, metadata: dict[str, str]) -> str:
        return self.client.create_multipart_upload(Bucket=self.bucket, Key=key, Metadata=metadata,
                                                   ChecksumAlgorithm="CRC32")["UploadId"]

    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        parts: dict[int, tuple[str, int]] = {}
        paginator = self.client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=upload_id):
            for part in page.get("Parts", []):
                parts[part["PartNumber"]] = (part["ETag"], part["Size"])
        return parts

    def _part_checksum(self, data: bytes) -> int | None:
        return zlib.crc32(data)

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes, checksum: int | None) -> str:
        # Passing the CRC32 (which botocore would otherwise compute itself) makes the server reject damaged bytes.
        sent = self._b64(checksum)
        response = self.client.upload_part(Bucket=self.bucket, Key=key, UploadId=upload_id, PartNumber=number,
                                           Body=data, ChecksumCRC32=sent)
        echoed = response.get("ChecksumCRC32")
        if echoed is not None and echoed != sent:
            raise ArtefactIntegrityError(f"s3://{self.bucket}/{key} part {number}: the server stored CRC32 {echoed}, "
                                         f"we sent {sent}; fix: retry the publish", path=key, expected=sent,
                                         actual=echoed)
        return response["ETag"]

    def _complete(self, key: str, upload_id: str, parts: list[PartDone]) -> None:
        self.client.complete_multipart_upload(
            Bucket=self.bucket, Key=key, UploadId=upload_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": p.etag, "ChecksumCRC32": self._b64(p.checksum)}
                                       for p in parts]})

    def _abort(self, key: str, upload_id: str) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=upload_id)

    def _delete_full(self, keys: list[str]) -> None:
        for start in range(0, len(keys), 1000):
            batch = keys[start:start + 1000]
            self.client.delete_objects(Bucket=self.bucket, Delete={"Objects": [{"Key": k} for k in batch],
                                                                   "Quiet": True})

    def _get_bytes(self, key: str) -> bytes | None:
        from botocore.exceptions import ClientError

        try:
            return self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"].read()
        except ClientError as exc:
            if self._code(exc) in ("404", "NoSuchKey", "NotFound"):
                return None
            raise

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        try:
            yield from body.iter_chunks(chunk_size=1024 * 1024)
        finally:
            body.close()

    def _list(self, prefix: str) -> Iterator[str]:
        paginator = self.client.get_paginator("list_objects_v2")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=self._key(prefix)):
            for item in page.get("Contents", []):
                yield self._relative(item["Key"])
