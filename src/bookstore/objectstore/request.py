"""One S3 request parsed: its target (bucket, key, query), its checked body, and what kind of call it is.

An object's content (PutObject, UploadPart) is spooled as it arrives (objectstore.bodies); any other
body is a document (XML), read whole up to documents.MAX_DOCUMENT.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from urllib.parse import unquote

from starlette.requests import ClientDisconnect, Request

from bookstore.objectstore import bodies, checksums, documents, inputs
from bookstore.objectstore.bodies import Payload
from bookstore.objectstore.errors import InvalidArgument, InvalidURI
from bookstore.objectstore.port import Body
from bookstore.objectstore.sigv4 import Authorized, PayloadReader, SigV4

MAX_PUT = 5 * 1024**3
# Room for the fields around a POST object's file (post_object bounds each field and their number).
MAX_FORM_FIELDS = 16 * 1024**2
# Bodies above this go to the store in a worker thread: they are written to files and fsynced.
INLINE_BODY = 64 * 1024
# Query keys of a bucket's sub-resources: a PUT naming none of them is CreateBucket.
_BUCKET_SUBRESOURCES = frozenset(
    [
        "versioning",
        "replication",
        "website",
        "tagging",
        "acl",
        "policy",
        "cors",
        "lifecycle",
        "object-lock",
    ]
)
# Query keys of an object's sub-resources whose PUT body is a document, not the object's content.
_OBJECT_DOCUMENTS = frozenset(["tagging", "acl"])


class Call:
    """One request, parsed: what the handlers need."""

    __slots__ = (
        "auth",
        "body",
        "bucket",
        "forwarded",
        "headers",
        "key",
        "method",
        "payload",
        "query",
        "request",
        "target",
        "trailers",
        "verified",
    )

    def __init__(
        self,
        request: Request,
        method: str,
        headers: dict[str, str],
        query: dict[str, str],
        bucket: str,
        key: str | None,
        auth: Authorized,
        target: str,
        forwarded: bool,
    ) -> None:
        self.request = request
        self.method = method
        self.headers = headers
        self.query = query
        self.bucket = bucket
        self.key = key
        self.auth = auth
        # A document's body (XML), read whole; an object's content is in `payload`, spooled.
        self.body = b""
        self.payload: Payload | None = None
        self.trailers: dict[str, str] = {}
        # The checksums of the body that were verified, echoed in the answer.
        self.verified: dict[str, str] = {}
        # The request target (raw path and query) as the client sent it; a forwarded request's, as sent there.
        self.target = target
        # Checked by the region that forwarded it, not here.
        self.forwarded = forwarded

    @property
    def object_key(self) -> str:
        """The key of a call on an object (dispatch routes only those calls here)."""
        assert self.key is not None
        return self.key

    def close(self) -> None:
        if self.payload is not None:
            self.payload.close()


def raw_target(request: Request) -> tuple[str, str, dict[str, str]]:
    """The raw path (UTF-8), raw query and headers (lower-case names, repeats joined) of a request."""
    scope = request.scope
    try:
        raw_path = (scope.get("raw_path") or scope["path"].encode()).decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidURI("Couldn't parse the specified URI.") from exc
    raw_query = scope.get("query_string", b"").decode("latin-1")
    headers: dict[str, str] = {}
    for name_bytes, value_bytes in scope["headers"]:
        name, value = name_bytes.decode("latin-1").lower(), value_bytes.decode("latin-1")
        headers[name] = f"{headers[name]},{value}" if name in headers else value
    return raw_path, raw_query, headers


async def read_call(
    request: Request,
    method: str,
    raw_path: str,
    raw_query: str,
    headers: dict[str, str],
    auth: Authorized,
    signer: SigV4 | None,
    *,
    staging: Path | None,
) -> Call:
    """The call a request makes, its body's signature checked by `signer`.

    Without a signer the request was forwarded by a region that checked its signature and decoded its
    payload already.
    """
    forwarded = signer is None
    query: dict[str, str] = {}
    for part in raw_query.split("&"):
        if part:
            name, _, value = part.partition("=")
            # unquote() returns text with no "%" as it is; not calling it is quicker still.
            query[unquote(name) if "%" in name else name] = unquote(value) if "%" in value else value
    inputs.check_query(query)
    _, _, rest = raw_path.partition("/")
    bucket_part, slash, key_part = rest.partition("/")
    try:
        bucket = unquote(bucket_part, errors="strict") if "%" in bucket_part else bucket_part
        key = None
        if slash and key_part:
            key = unquote(key_part, errors="strict") if "%" in key_part else key_part
    except UnicodeDecodeError as exc:
        raise InvalidURI("Couldn't parse the specified URI: keys are UTF-8") from exc
    target = f"{raw_path}?{raw_query}" if raw_query else raw_path
    call = Call(request, method, headers, query, bucket, key, auth, target, forwarded)
    if method in ("PUT", "POST"):
        reader = PayloadReader() if signer is None else signer.payload(auth, headers)
        if carries_content(call):
            call.payload = await receive(request, reader, headers, MAX_PUT, staging)
            call.trailers, call.verified = call.payload.trailers, call.payload.verified
        elif _form_upload(call):
            # A POST object's form: its file, and some room for the fields around it.
            call.payload = await receive(request, reader, headers, MAX_PUT + MAX_FORM_FIELDS, staging)
            call.trailers, call.verified = call.payload.trailers, call.payload.verified
        else:
            payload = await receive(request, reader, _document_headers(call), documents.MAX_DOCUMENT, staging)
            try:
                call.body = payload.read(documents.MAX_DOCUMENT)
                call.trailers, call.verified = payload.trailers, payload.verified
            finally:
                payload.close()
    return call


async def receive(
    request: Request, reader: PayloadReader, headers: Mapping[str, str], limit: int, staging: Path | None
) -> Payload:
    """A request's body, checked by `reader` and spooled (to `staging` beyond a MiB)."""
    return await bodies.receive(_Pieces(request), reader, headers, limit=limit, staging=staging)


class _Pieces:
    """A request's body as it arrives, as Starlette's `Request.stream()` reads it, without being an
    async generator: the event loop keeps a weak set of those and hooks the first step of each, which
    cost a small PUT more than its body's read."""

    def __init__(self, request: Request) -> None:
        self._request = request

    def __aiter__(self) -> _Pieces:
        return self

    async def __anext__(self) -> bytes:
        request = self._request
        while not request._stream_consumed:
            message = await request.receive()
            if message["type"] == "http.request":
                if not message.get("more_body", False):
                    # Read by expect.unread (and by Starlette, should anything stream the body again).
                    request._stream_consumed = True
                body: bytes = message.get("body", b"")
                if body:
                    return body
            elif message["type"] == "http.disconnect":
                request._is_disconnected = True
                raise ClientDisconnect()
        raise StopAsyncIteration


async def drain(request: Request) -> None:
    """Read what is left of a refused request's body, so the connection's next request parses cleanly."""
    try:
        async for _ in request.stream():
            pass
    except Exception:
        # Already consumed, or the client went away: nothing is left to drain.
        return


def _document_headers(call: Call) -> Mapping[str, str]:
    """The headers that describe a document body: CompleteMultipartUpload's x-amz-checksum-* is the
    checksum of the object it completes (checked against the upload's), not of its XML."""
    if call.method != "POST" or call.key is None or "uploadId" not in call.query:
        return call.headers
    named = set(checksums.HEADERS.values())
    return {name: value for name, value in call.headers.items() if name not in named}


def _form_upload(call: Call) -> bool:
    """A POST object (a form posted to a bucket): spooled as an object's content, not read as a document."""
    content_type = call.headers.get("content-type", "").lower()
    return call.method == "POST" and call.key is None and content_type.startswith("multipart/form-data")


def carries_content(call: Call) -> bool:
    """True for PutObject and UploadPart (not copies): their body is an object's content, not a document."""
    if call.method != "PUT" or call.key is None or "x-amz-copy-source" in call.headers:
        return False
    return _OBJECT_DOCUMENTS.isdisjoint(call.query)


def object_content(call: Call) -> tuple[Body, bool]:
    """An object's content for the store: in memory when small, else read from its spool; and whether big."""
    payload = call.payload
    if payload is None:
        return call.body, len(call.body) > INLINE_BODY
    if payload.size <= INLINE_BODY:
        return payload.read(INLINE_BODY), False
    return payload.chunks(), True


def creates_bucket(call: Call) -> bool:
    """True for CreateBucket: a PUT of a bucket that names no sub-resource."""
    return call.method == "PUT" and call.key is None and _BUCKET_SUBRESOURCES.isdisjoint(call.query)


def int_param(value: str | None, default: int, name: str, low: int, high: int) -> int:
    """An integer query parameter within [low, high]; `default` when absent; else InvalidArgument."""
    if value is None:
        return default
    try:
        number = int(value)
    except ValueError as exc:
        raise InvalidArgument(f"{name} must be an integer, not {value!r}") from exc
    if not low <= number <= high:
        raise InvalidArgument(f"{name} must be between {low} and {high}")
    return number
