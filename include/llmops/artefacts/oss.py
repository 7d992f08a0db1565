"""Alibaba Cloud OSS backend (oss2) with CRC64 checks.

OSS keeps a CRC64-ECMA per object (`x-oss-hash-crc64ecma`); manifests record it and rollout
pre-flight compares it with what OSS reports. The manifest is created with
`x-oss-forbid-overwrite: true`, which OSS applies atomically (409 FileAlreadyExists when taken).

oss2 (with `enable_crc`) compares the CRC64-ECMA it computes for every upload, part and completed
multipart object with the one OSS returns in `x-oss-hash-crc64ecma`, and we compare a finished
object's CRC64 with the one combined from the local parts before it counts as uploaded. Parts go
up in parallel through the shared engine (`_object.py`), which resumes from the server's record of
the open multipart upload, so a retry on another pod resumes too (oss2's own `resumable_upload`
keeps its checkpoint on local disk, which a new pod does not have).
"""

from __future__ import annotations

from collections.abc import Iterator

from llmops.artefacts._object import ObjectStore, PartDone, RemoteObject
from llmops.artefacts.clients import check_credentials, oss_bucket
from llmops.artefacts.errors import ArtefactIntegrityError, StoreUriError


class OssStore(ObjectStore):
    scheme = "oss"

    def __init__(self, bucket: str, root: str, credentials: dict, **options):
        super().__init__(f"oss://{bucket}" + (f"/{root}" if root else ""), root, **options)
        self.bucket_name = bucket
        check_credentials("oss", credentials)
        if not credentials.get("endpoint"):
            raise StoreUriError(f"oss://{bucket} needs an endpoint; fix: set credentials['endpoint'] (e.g. "
                                "https://oss-cn-hangzhou-internal.aliyuncs.com) in the Connection's extra")
        self._credentials = credentials
        self._bucket = None

    @property
    def bucket(self):
        if self._bucket is None:
            self._bucket = oss_bucket(self.bucket_name, self._credentials, pool_size=max(10, self.threads * 2))
        return self._bucket

    @staticmethod
    def _is_missing(exc: Exception) -> bool:
        return getattr(exc, "status", None) == 404

    # --- checksums -------------------------------------------------------------------------------

    def _part_checksum(self, data: bytes) -> int | None:
        return self._crc64(data)

    def _crc64(self, data: bytes) -> int | None:
        from oss2.utils import Crc64

        crc = Crc64(0)
        crc.update(data)
        return crc.crc

    def _crc_combine(self, crc1: int, crc2: int, len2: int) -> int:
        from oss2.utils import Crc64

        return Crc64(0).combine(crc1, crc2, len2)

    def _object_matches(self, remote, local) -> bool:
        if remote.crc64 is not None and local.crc64 is not None:
            return remote.crc64 == local.crc64
        return super()._object_matches(remote, local)

    def _completed_matches(self, remote, parts) -> bool:
        combined = parts[0].checksum
        for part in parts[1:]:
            combined = self._crc_combine(combined, part.checksum, part.size)
        if remote.crc64 is None:  # OSS always reports it; without it fall back to the ETag rule
            return super()._completed_matches(remote, parts)
        return remote.crc64 == combined

    # --- primitives ------------------------------------------------------------------------------

    def _head(self, key: str) -> RemoteObject | None:
        import oss2

        try:
            head = self.bucket.head_object(key)
        except oss2.exceptions.OssError as exc:
            if self._is_missing(exc):
                return None
            raise
        crc = head.headers.get("x-oss-hash-crc64ecma")
        return RemoteObject(size=head.content_length, sha256=head.headers.get("x-oss-meta-sha256"),
                            etag=head.etag or "", crc64=int(crc) if crc else None,
                            checksums={"crc64ecma": str(int(crc))} if crc else {})

    def _server_checksums(self, parts: list[tuple[int, int]], multipart: bool) -> dict[str, str]:
        combined = parts[0][0]
        for crc, size in parts[1:]:
            combined = self._crc_combine(combined, crc, size)
        return {"crc64ecma": str(combined)}

    def _put_object(self, key: str, data: bytes, metadata: dict[str, str], *, if_absent: bool = False,
                    checksum: int | None = None) -> str | None:  # oss2 checks the CRC64 OSS returns
        import oss2

        headers = {f"x-oss-meta-{name}": value for name, value in metadata.items()}
        if if_absent:
            headers["x-oss-forbid-overwrite"] = "true"
        try:
            return self.bucket.put_object(key, data, headers=headers).etag
        except oss2.exceptions.OssError as exc:
            if if_absent and (getattr(exc, "code", "") == "FileAlreadyExists" or exc.status == 409):
                return None
            raise

    def _find_upload(self, key: str) -> str | None:
        import oss2

        mine = [u for u in oss2.MultipartUploadIterator(self.bucket, prefix=key) if u.key == key]
        mine.sort(key=lambda u: u.initiation_date)
        return mine[-1].upload_id if mine else None

    def _create_upload(self, key: str, metadata: dict[str, str]) -> str:
        headers = {f"x-oss-meta-{name}": value for name, value in metadata.items()}
        return self.bucket.init_multipart_upload(key, headers=headers).upload_id

    def _list_parts(self, key: str, upload_id: str) -> dict[int, tuple[str, int]]:
        import oss2

        return {p.part_number: (p.etag, p.size) for p in oss2.PartIterator(self.bucket, key, upload_id)}

    def _upload_part(self, key: str, upload_id: str, number: int, data: bytes, checksum: int | None) -> str:
        return self.bucket.upload_part(key, upload_id, number, data).etag  # oss2 checks the part's CRC64

    def _complete(self, key: str, upload_id: str, parts: list[PartDone]) -> None:
        from oss2.models import PartInfo

        infos = [PartInfo(p.number, p.etag, size=p.size, part_crc=p.checksum) for p in parts]
        self.bucket.complete_multipart_upload(key, upload_id, infos)  # oss2 checks the combined CRC64

    def _abort(self, key: str, upload_id: str) -> None:
        self.bucket.abort_multipart_upload(key, upload_id)

    def _delete_full(self, keys: list[str]) -> None:
        for key in keys:
            self.bucket.delete_object(key)

    def _get_bytes(self, key: str) -> bytes | None:
        import oss2

        try:
            return b"".join(self._iter_chunks(key))
        except oss2.exceptions.OssError as exc:
            if self._is_missing(exc):
                return None
            raise

    def _iter_chunks(self, key: str) -> Iterator[bytes]:
        result = self.bucket.get_object(self._key(key))
        yield from result
        if result.server_crc is not None and result.client_crc != result.server_crc:
            raise ArtefactIntegrityError(
                f"{self.root_uri}/{key}: downloaded bytes have CRC64 {result.client_crc}, OSS reports "
                f"{result.server_crc}; fix: retry the download", path=key, expected=str(result.server_crc),
                actual=str(result.client_crc))

    def _list(self, prefix: str) -> Iterator[str]:
        import oss2

        for item in oss2.ObjectIterator(self.bucket, prefix=self._key(prefix)):
            yield self._relative(item.key)
