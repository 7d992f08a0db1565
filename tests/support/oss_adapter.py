"""A small OSS-dialect adapter in front of a real S3 server (SeaweedFS), so `oss2` can be tested.

No OSS emulator exists. oss2 speaks OSS: `x-oss-*` headers, CRC64-ECMA checksums in
`x-oss-hash-crc64ecma`, and XML that differs from S3's in a few required elements. This adapter
forwards every request to S3 (path style, anonymous: SeaweedFS runs without identities) and
translates only that dialect:

- request headers `x-oss-meta-*` -> `x-amz-meta-*`, `x-oss-forbid-overwrite: true` -> `If-None-Match: *`
  (on PUT and CompleteMultipartUpload; S3 applies it atomically) and its 412 -> OSS's 409 FileAlreadyExists;
- response headers back, plus `x-oss-hash-crc64ecma` computed here from the bytes that passed through
  (parts are remembered and combined on CompleteMultipartUpload), so oss2's CRC64 checks are real. Like
  OSS, the CRC64 follows the object's bytes: it is remembered per (key, ETag), and an object changed
  behind the adapter's back (new ETag) gets its CRC64 recomputed from the bytes S3 holds;
- response XML: namespaces stripped, elements oss2 requires but S3 omits added.

`stats` counts requests and body bytes per operation; tests use it to prove a retry resumed.

    with seaweed_server() as s3, oss_adapter(s3.endpoint_url) as oss:
        open_store("oss://bucket/root", credentials=oss.credentials)
"""

from __future__ import annotations

import contextlib
import http.client
import re
import threading
import uuid
import xml.etree.ElementTree as ET
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from urllib.parse import parse_qs, urlsplit

from oss2.utils import Crc64

CHUNK = 1024 * 1024


@dataclass
class AdapterState:
    upstream: tuple[str, int]
    object_crc: dict[str, tuple[str, int]] = field(default_factory=dict)  # path -> (etag, crc64 of the object)
    part_crc: dict[str, dict[int, tuple[int, int]]] = field(default_factory=dict)  # upload id -> part -> (crc, size)
    stats: Counter = field(default_factory=Counter)
    corrupt_crc: bool = False  # tests set it to prove clients check x-oss-hash-crc64ecma
    lock: threading.Lock = field(default_factory=threading.Lock)


def _operation(method: str, query: dict) -> str:
    if "uploadId" in query:
        return {"PUT": "upload_part", "POST": "complete", "GET": "list_parts", "DELETE": "abort"}[method]
    if "uploads" in query:
        return "init_multipart" if method == "POST" else "list_uploads"
    return method.lower()


def _fix_xml(body: bytes) -> bytes:
    root = ET.fromstring(re.sub(rb'\sxmlns="[^"]*"', b"", body, count=1))
    tag = root.tag

    def ensure(parent: ET.Element, name: str, text: str) -> None:
        if parent.find(name) is None:
            ET.SubElement(parent, name).text = text

    for stamp in [*root.iter("LastModified"), *root.iter("Initiated")]:  # OSS writes milliseconds
        if stamp.text and re.fullmatch(r"\S+T\d\d:\d\d:\d\dZ", stamp.text):
            stamp.text = stamp.text[:-1] + ".000Z"
    if tag == "ListBucketResult":
        for contents in root.findall("Contents"):
            ensure(contents, "Type", "Normal")
            ensure(contents, "StorageClass", "Standard")
        if root.findtext("IsTruncated") == "true" and root.find("NextMarker") is None:
            keys = root.findall("Contents/Key")
            ensure(root, "NextMarker", keys[-1].text if keys else "")
    elif tag == "ListMultipartUploadsResult":
        ensure(root, "NextKeyMarker", "")
        ensure(root, "NextUploadIdMarker", "")
    elif tag == "ListPartsResult":
        parts = root.findall("Part/PartNumber")
        ensure(root, "NextPartNumberMarker", parts[-1].text if parts else "0")
    return b'<?xml version="1.0" encoding="UTF-8"?>\n' + ET.tostring(root)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    state: AdapterState  # set on the subclass made per server

    def log_message(self, format, *args):  # noqa: A002 - keep test output quiet
        pass

    def do_GET(self):
        self._forward()

    def do_HEAD(self):
        self._forward()

    def do_PUT(self):
        self._forward()

    def do_POST(self):
        self._forward()

    def do_DELETE(self):
        self._forward()

    def _forward(self) -> None:
        state = self.state
        url = urlsplit(self.path)
        query = parse_qs(url.query, keep_blank_values=True)
        operation = _operation(self.command, query)
        headers = {}
        for name, value in self.headers.items():
            lower = name.lower()
            if lower.startswith("x-oss-meta-"):
                headers["x-amz-meta-" + lower[len("x-oss-meta-"):]] = value
            elif lower == "x-oss-forbid-overwrite" and value.lower() == "true":
                headers["If-None-Match"] = "*"
            elif lower in ("host", "authorization", "connection", "expect") or lower.startswith("x-oss-"):
                continue
            else:
                headers[name] = value
        length = int(self.headers.get("Content-Length") or 0)
        upstream = http.client.HTTPConnection(*state.upstream, timeout=300)
        try:
            upstream.putrequest(self.command, self.path, skip_accept_encoding=True)
            for name, value in headers.items():
                upstream.putheader(name, value)
            upstream.endheaders()
            crc = Crc64(0)
            remaining = length
            while remaining:
                chunk = self.rfile.read(min(CHUNK, remaining))
                if not chunk:
                    break
                crc.update(chunk)
                upstream.send(chunk)
                remaining -= len(chunk)
            response = upstream.getresponse()
            with state.lock:
                state.stats[f"{operation}_requests"] += 1
                state.stats[f"{operation}_bytes"] += length
            self._respond(response, operation, query, url.path, crc.crc, length)
        finally:
            upstream.close()

    def _object_crc(self, path: str, etag: str) -> int:
        state = self.state
        with state.lock:
            known = state.object_crc.get(path)
        if known is not None and known[0] == etag:
            return known[1]
        crc = _crc_of_upstream(state, path)
        with state.lock:
            state.object_crc[path] = (etag, crc)
        return crc

    def _respond(self, response, operation: str, query: dict, path: str, body_crc: int, length: int) -> None:
        state = self.state
        status = response.status
        out_headers: list[tuple[str, str]] = [("x-oss-request-id", uuid.uuid4().hex)]
        crc = None
        content_type = response.getheader("Content-Type", "")
        rewrite = self.command != "HEAD" and ("xml" in content_type or operation not in ("get",))
        body = response.read() if rewrite else None
        etag = (response.getheader("ETag") or "").strip('"')
        if status < 300:
            with state.lock:
                if operation == "put":
                    crc = body_crc
                    state.object_crc[path] = (etag, crc)
                elif operation == "upload_part":
                    state.part_crc.setdefault(query["uploadId"][0], {})[int(query["partNumber"][0])] = (body_crc,
                                                                                                       length)
                    crc = body_crc
                elif operation == "complete":
                    parts = state.part_crc.pop(query["uploadId"][0], {})
                    combined, combine = 0, Crc64(0)
                    for number in sorted(parts):
                        part_crc, size = parts[number]
                        combined = combine.combine(combined, part_crc, size)
                    crc = combined
                    found = re.search(rb"<ETag>\s*(?:&quot;|\")?([^<&\"]*)", body or b"")
                    state.object_crc[path] = (found.group(1).decode() if found else "", crc)
                elif operation == "delete":
                    state.object_crc.pop(path, None)
            if operation in ("get", "head") and "Range" not in self.headers:
                crc = self._object_crc(path, etag)
        if crc is not None:
            crc = crc ^ 1 if state.corrupt_crc else crc
            out_headers.append(("x-oss-hash-crc64ecma", str(crc)))
        if status == 412 and self.headers.get("x-oss-forbid-overwrite", "").lower() == "true":
            status, body = 409, (b"<?xml version='1.0' encoding='UTF-8'?>\n<Error><Code>FileAlreadyExists</Code>"
                                 b"<Message>The object you specified already exists.</Message></Error>")
        elif body and body.lstrip().startswith(b"<"):
            body = _fix_xml(body)
        for name, value in response.getheaders():
            lower = name.lower()
            if lower.startswith("x-amz-meta-"):
                out_headers.append(("x-oss-meta-" + lower[len("x-amz-meta-"):], value))
            elif lower in ("content-length", "transfer-encoding", "connection") or lower.startswith("x-amz-"):
                continue
            else:
                out_headers.append((name, value))
        self.send_response(status)
        for name, value in out_headers:
            self.send_header(name, value)
        if body is not None:
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)
            return
        upstream_length = response.getheader("Content-Length")
        if upstream_length is not None:
            self.send_header("Content-Length", upstream_length)
        self.end_headers()
        if self.command == "HEAD":
            return
        while chunk := response.read(CHUNK):
            self.wfile.write(chunk)


def _crc_of_upstream(state: AdapterState, path: str) -> int:
    """CRC64 of the bytes S3 holds at `path` (for an object the adapter did not see written)."""
    upstream = http.client.HTTPConnection(*state.upstream, timeout=300)
    try:
        upstream.request("GET", path)
        response = upstream.getresponse()
        crc = Crc64(0)
        while chunk := response.read(CHUNK):
            crc.update(chunk)
        return crc.crc
    finally:
        upstream.close()


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def handle_error(self, request, client_address):  # clients closing kept-alive connections is normal
        import sys

        if not isinstance(sys.exc_info()[1], ConnectionError):
            super().handle_error(request, client_address)


@dataclass
class OssAdapter:
    endpoint: str
    state: AdapterState
    access_key_id: str = "test-access-key"
    access_key_secret: str = "test-secret-key"

    @property
    def credentials(self) -> dict:
        """The `credentials` mapping `llmops.artefacts.open_store` takes for oss:// URIs."""
        return {"endpoint": self.endpoint, "access_key_id": self.access_key_id,
                "access_key_secret": self.access_key_secret}

    @property
    def stats(self) -> Counter:
        return self.state.stats


@contextlib.contextmanager
def oss_adapter(s3_endpoint: str) -> Iterator[OssAdapter]:
    """Serve the OSS dialect on 127.0.0.1 (a random free port) in a thread, forwarding to `s3_endpoint`."""
    upstream = urlsplit(s3_endpoint)
    state = AdapterState(upstream=(upstream.hostname, upstream.port))
    handler = type("Handler", (_Handler,), {"state": state})
    server = _Server(("127.0.0.1", 0), handler)
    thread = threading.Thread(target=server.serve_forever, name="oss-adapter", daemon=True)
    thread.start()
    try:
        yield OssAdapter(endpoint=f"http://127.0.0.1:{server.server_address[1]}", state=state)
    finally:
        server.shutdown()
        server.server_close()
        thread.join(timeout=10)
