"""Requests between regions' S3 ports: forwarded S3 requests, replica writes, version reads, bucket lookups.

They travel through the link simulator to a peer's S3 port under INTERNAL_PREFIX, signed with the
deployment's shared secret (bookstore.replication.auth), never with SigV4 user credentials: the region
that received a user's request has already checked its signature. Everything a request means is in
its signed target (method, path and query) and body: what travels in headers (the forwarded request's
headers, a replica's version) is bound to the target by its SHA-256 in the query, so nothing covered
by the HMAC can be altered on the way. Object keys travel percent-encoded in the query, never in the
path, because HTTP clients normalise `.` and `..` path segments.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass
from typing import Any
from urllib.parse import quote, urlencode

import httpx
import orjson

from bookstore.domain.errors import Unavailable
from bookstore.objectstore.errors import S3Error
from bookstore.objectstore.port import Bucket, ObjectVersion
from bookstore.ports import Clock
from bookstore.replication.auth import PeerAuth

INTERNAL_PREFIX = "/_replication/"
FORWARD_PATH = "/_replication/forward"
OBJECTS_PATH = "/_replication/objects"
BUCKETS_PATH = "/_replication/buckets"
PING_PATH = "/_replication/ping"
FORWARDED_HEADERS = "x-bookstore-forwarded-headers"
VERSION_HEADER = "x-bookstore-version"
# How long an idle connection to a peer is kept: below the region server's keep-alive timeout.
KEEPALIVE_S = 55.0
# A forwarded response up to this size is read whole (one write back); larger ones stream.
_BUFFERED_RESPONSE = 1024 * 1024
# Request headers that belong to one hop (or to a SigV4 signature already checked), never forwarded.
_HOP_HEADERS = frozenset(
    [
        "authorization",
        "connection",
        "content-length",
        "expect",
        "host",
        "keep-alive",
        "transfer-encoding",
        "x-amz-content-sha256",
        "x-amz-decoded-content-length",
        "x-amz-trailer",
        "x-amz-date",
        "x-amz-security-token",
    ]
)
_HOP_RESPONSE_HEADERS = frozenset(["connection", "keep-alive", "transfer-encoding", "date", "server"])


class PeerUnavailable(Unavailable):
    """A peer region did not answer (link cut, region down, timeout)."""


class PeerRefused(S3Error):
    """A peer region answered with an S3 error; it carries that error's code and status on."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def encode_fields(fields: Mapping[str, Any]) -> str:
    """A header-safe (ASCII) encoding of a JSON-like mapping."""
    return base64.urlsafe_b64encode(orjson.dumps(dict(fields))).decode("ascii")


def decode_fields(text: str) -> dict[str, Any]:
    value = orjson.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return value


def version_fields(version: ObjectVersion) -> dict[str, Any]:
    """The fields of a version a replica keeps: id, times, ETag, size, type, metadata, headers, tags."""
    return {
        "bucket": version.bucket,
        "key": version.key,
        "versionId": version.version_id,
        "lastModifiedMs": version.last_modified_ms,
        "etag": version.etag,
        "size": version.size,
        "deleteMarker": version.is_delete_marker,
        "contentType": version.content_type,
        "metadata": dict(version.metadata),
        "headers": dict(version.headers),
        "tags": dict(version.tags),
        "partsCount": version.parts_count,
    }


def version_from_fields(doc: Mapping[str, Any]) -> ObjectVersion:
    """The version `version_fields` described; ValueError when a field is missing or of the wrong type."""
    try:
        parts = doc.get("partsCount")
        version = ObjectVersion(
            bucket=_str(doc["bucket"]),
            key=_str(doc["key"]),
            version_id=_str(doc["versionId"]),
            last_modified_ms=int(doc["lastModifiedMs"]),
            etag=_str(doc["etag"]),
            size=int(doc["size"]),
            is_delete_marker=bool(doc["deleteMarker"]),
            content_type=_str(doc["contentType"]),
            metadata=_strings(doc["metadata"]),
            headers=_strings(doc["headers"]),
            tags=_strings(doc["tags"]),
            parts_count=None if parts is None else int(parts),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a version: {exc}") from exc
    return version


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("expected a mapping")
    return {_str(k): _str(v) for k, v in value.items()}


def forwardable(headers: Mapping[str, str], trailers: Mapping[str, str]) -> dict[str, str]:
    """The headers of a checked request that the owner region needs: no hop or signature headers.

    The body is forwarded decoded, so aws-chunked leaves Content-Encoding, and checksums that came as
    trailers become headers.
    """
    out = {name: value for name, value in headers.items() if name not in _HOP_HEADERS}
    encoding = out.get("content-encoding")
    if encoding is not None:
        kept = [t.strip() for t in encoding.split(",") if t.strip() and t.strip() != "aws-chunked"]
        if kept:
            out["content-encoding"] = ", ".join(kept)
        else:
            del out["content-encoding"]
    out.update(trailers)
    return out


@dataclass
class Forwarded:
    """A peer's answer to a forwarded request: status, headers, and the body (whole or streamed)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    stream: AsyncIterator[bytes] | None = None


class PeerS3:
    """One peer region's S3 port as this region reaches it through the link; requests signed by `me`."""

    def __init__(
        self,
        region: str,
        base_url: str,
        *,
        me: str,
        secret: str,
        clock: Clock,
        timeout_s: float = 10.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.region = region
        self.base_url = base_url
        self.me = me
        self.timeout_s = timeout_s
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=PeerAuth(secret, me, clock, destination=region),
            timeout=httpx.Timeout(timeout_s, connect=min(3.0, timeout_s)),
            # Connections through the link are costly (a round trip to open), so idle ones are kept a
            # while, though dropped before the peer's server closes them (runtime.region: after 65 s), so
            # a request never goes out on a connection the far end is closing.
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=32, keepalive_expiry=KEEPALIVE_S
            ),
            transport=transport,
        )

    async def aclose(self) -> None:
        await self._client.aclose()

    async def forward(self, method: str, target: str, headers: Mapping[str, str], body: bytes) -> Forwarded:
        """Send a checked S3 request (`target` = raw path and query as the client sent them) to the peer."""
        encoded = encode_fields(headers)
        query = urlencode({"target": target, "headers": digest(encoded)}, quote_via=quote)
        request = self._client.build_request(
            method,
            f"{FORWARD_PATH}?{query}",
            content=body,
            headers={FORWARDED_HEADERS: encoded},
            timeout=self._timeout(len(body)),
        )
        response = await self._send(request, stream=True)
        out_headers = [
            (name, value)
            for name, value in response.headers.multi_items()
            if name.lower() not in _HOP_RESPONSE_HEADERS
        ]
        length = response.headers.get("content-length")
        if method == "HEAD" or (
            length is not None and length.isdigit() and int(length) <= _BUFFERED_RESPONSE
        ):
            try:
                body_bytes = await response.aread()
            except httpx.HTTPError as exc:
                raise PeerUnavailable(f"{self.region} stopped answering: {_describe(exc)}") from exc
            finally:
                await response.aclose()
            return Forwarded(response.status_code, out_headers, body_bytes)
        return Forwarded(response.status_code, out_headers, None, self._relay(response))

    async def _relay(self, response: httpx.Response) -> AsyncIterator[bytes]:
        try:
            async for chunk in response.aiter_raw():
                yield chunk
        finally:
            await response.aclose()

    async def put_replica(self, version: ObjectVersion, body: bytes) -> None:
        """Write `version` (with `body`) into the peer's store as a replica; idempotent.

        Raises PeerUnavailable when the peer does not answer, PeerRefused when it refuses.
        """
        encoded = encode_fields(version_fields(version))
        query = urlencode({"version": digest(encoded)}, quote_via=quote)
        request = self._client.build_request(
            "PUT",
            f"{OBJECTS_PATH}?{query}",
            content=body,
            headers={VERSION_HEADER: encoded},
            timeout=self._timeout(len(body)),
        )
        response = await self._send(request)
        if response.status_code != 200:
            raise _refusal(self.region, response)

    async def get_version(
        self, bucket: str, key: str, version_id: str | None, byte_range: str | None = None
    ) -> tuple[ObjectVersion, bytes]:
        """A version of an object in a bucket the peer owns, and its bytes (or the `bytes=` range of them)."""
        fields = {"bucket": bucket, "key": key}
        if version_id:
            fields["versionId"] = version_id
        if byte_range:
            fields["range"] = byte_range
        response = await self._send(
            self._client.build_request("GET", f"{OBJECTS_PATH}?{urlencode(fields, quote_via=quote)}")
        )
        if response.status_code not in (200, 206):
            raise _refusal(self.region, response)
        try:
            version = version_from_fields(decode_fields(response.headers[VERSION_HEADER]))
        except (KeyError, ValueError) as exc:
            raise PeerUnavailable(f"{self.region} answered a version read without a version") from exc
        return version, response.content

    async def bucket(self, name: str) -> Bucket | None:
        """The bucket `name` when the peer owns it (its own store holds it), else None."""
        response = await self._send(
            self._client.build_request(
                "GET", f"{BUCKETS_PATH}?{urlencode({'name': name}, quote_via=quote)}", timeout=2.0
            )
        )
        if response.status_code == 404:
            return None
        if response.status_code != 200:
            raise _refusal(self.region, response)
        doc = response.json()
        return Bucket(str(doc["name"]), str(doc["region"]), int(doc["createdMs"]))

    async def ping(self, timeout_s: float = 2.0) -> None:
        """A signed round trip; keeps a connection through the link open, so a copy pays no handshake."""
        response = await self._send(self._client.build_request("GET", PING_PATH, timeout=timeout_s))
        if response.status_code != 200:
            raise _refusal(self.region, response)

    async def _send(self, request: httpx.Request, *, stream: bool = False) -> httpx.Response:
        try:
            return await self._client.send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"{self.region} unreachable: {_describe(exc)}") from exc

    def _timeout(self, size: int) -> httpx.Timeout:
        # Big bodies take longer to cross; a few MiB per second is far below any link's speed.
        total = self.timeout_s + size / (4 * 1024 * 1024)
        return httpx.Timeout(total, connect=min(3.0, total))


def _describe(exc: httpx.HTTPError) -> str:
    text = str(exc)
    return f"{type(exc).__name__}: {text}" if text else type(exc).__name__


def _refusal(region: str, response: httpx.Response) -> PeerRefused:
    text = response.text
    code = text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""
    message = text.split("<Message>", 1)[1].split("</Message>", 1)[0] if "<Message>" in text else ""
    if not code:
        try:
            doc = orjson.loads(response.content)
            code, message = str(doc.get("error", "")), str(doc.get("message", ""))
        except (orjson.JSONDecodeError, AttributeError):
            code = ""
    return PeerRefused(
        message or f"{region} answered {response.status_code}", response.status_code, code or "InternalError"
    )
