"""The S3 header rules: what a write stores from its headers, what GET and HEAD answer with, byte ranges,
conditional requests (If-Match and the rest, for copies too) and the x-amz-copy-source header.
"""

from __future__ import annotations

from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from typing import Any
from urllib.parse import unquote

from starlette.responses import Response

from bookstore.objectstore import documents, encoded_words, inputs
from bookstore.objectstore import tags as tag_rules
from bookstore.objectstore.errors import InvalidArgument, KeyTooLongError, PreconditionFailed
from bookstore.objectstore.port import STORED_HEADERS, ByteRange, ObjectVersion, check_key

_LOWER_STORED = {name.lower(): name for name in STORED_HEADERS}


def write_fields(headers: Mapping[str, str], *, as_received: bool = True) -> dict[str, Any]:
    """What a write stores from its request headers: content type, user metadata, stored headers, tags.

    `as_received`: header values as the HTTP server read them (bytes as Latin-1), not a form's text.
    """
    metadata = inputs.user_metadata(headers, as_received=as_received)
    stored = {canonical: headers[lower] for lower, canonical in _LOWER_STORED.items() if lower in headers}
    content_type = headers.get("content-type") or None
    if not as_received:
        # Kept as a request's header would bring them (UTF-8 bytes as Latin-1), so they can be answered.
        stored = {name: _as_header_bytes(value) for name, value in stored.items()}
        content_type = None if content_type is None else _as_header_bytes(content_type)
    encoding = stored.get("Content-Encoding")
    if encoding is not None:
        # aws-chunked is how this request was sent, not how the object is stored.
        kept = [t.strip() for t in encoding.split(",") if t.strip() and t.strip() != "aws-chunked"]
        if kept:
            stored["Content-Encoding"] = ", ".join(kept)
        else:
            del stored["Content-Encoding"]
    tags = tag_rules.from_header(headers["x-amz-tagging"]) if "x-amz-tagging" in headers else None
    return {
        "content_type": content_type,
        "metadata": metadata,
        "headers": stored,
        "tags": tags,
    }


def _as_header_bytes(text: str) -> str:
    return text.encode("utf-8", "surrogatepass").decode("latin-1")


def first_byte(header: str | None, size: int) -> int:
    wanted = byte_range(header) if header else None
    if wanted is None:
        return 0
    first, last = wanted
    if first is None:
        return max(0, size - (last or 0))
    return first


def object_headers(version: ObjectVersion) -> dict[str, str]:
    out = {
        "ETag": f'"{version.etag}"',
        "Last-Modified": documents.http_date(version.last_modified_ms),
        "Content-Type": version.content_type,
        "Accept-Ranges": "bytes",
    }
    if version.version_id != "null":
        out["x-amz-version-id"] = version.version_id
    out.update(version.headers)
    for name, value in version.metadata.items():
        # A header carries ASCII: other text goes out as an RFC 2047 encoded word, as S3 sends it.
        out[f"x-amz-meta-{name}"] = encoded_words.to_header(value)
    if version.replication_status:
        out["x-amz-replication-status"] = version.replication_status
    if version.tags:
        out["x-amz-tagging-count"] = str(len(version.tags))
    return out


def byte_range(header: str | None) -> ByteRange | None:
    """The one range of a `bytes=` header; None (the whole object, as S3 does) when absent or unusable."""
    if not header or not header.startswith("bytes="):
        return None
    spec = header[6:].strip()
    if "," in spec:
        return None
    first, dash, last = spec.partition("-")
    if not dash:
        return None
    try:
        if not first.strip():
            return (None, int(last)) if last.strip() else None
        start = int(first)
        end = int(last) if last.strip() else None
    except ValueError:
        return None
    if start < 0 or (end is not None and end < start):
        return None
    return start, end


def _http_ms(value: str) -> int | None:
    try:
        return int(parsedate_to_datetime(value).timestamp() * 1000)
    except (TypeError, ValueError, IndexError):
        return None


def _etag_matches(header: str, etag: str) -> bool:
    return any(t.strip() in ("*", f'"{etag}"', etag) for t in header.split(","))


def preconditions(version: ObjectVersion, headers: Mapping[str, str]) -> Response | None:
    """The 304 or 412 answer that conditional headers call for, else None."""
    if_match, if_none_match = headers.get("if-match"), headers.get("if-none-match")
    modified_s = version.last_modified_ms // 1000 * 1000
    if if_match is not None and not _etag_matches(if_match, version.etag):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    if if_match is None and "if-unmodified-since" in headers:
        since = _http_ms(headers["if-unmodified-since"])
        if since is not None and modified_s > since:
            raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")
    if if_none_match is not None and _etag_matches(if_none_match, version.etag):
        return Response(status_code=304, headers={"ETag": f'"{version.etag}"'})
    if if_none_match is None and "if-modified-since" in headers:
        since = _http_ms(headers["if-modified-since"])
        if since is not None and modified_s <= since:
            return Response(status_code=304, headers={"ETag": f'"{version.etag}"'})
    return None


def copy_preconditions(source: ObjectVersion, headers: Mapping[str, str]) -> None:
    match = headers.get("x-amz-copy-source-if-match")
    none_match = headers.get("x-amz-copy-source-if-none-match")
    if (match is not None and not _etag_matches(match, source.etag)) or (
        none_match is not None and _etag_matches(none_match, source.etag)
    ):
        raise PreconditionFailed("At least one of the pre-conditions you specified did not hold")


def copy_source(header: str) -> tuple[str, str, str | None]:
    """(bucket, key, version id) of an x-amz-copy-source header: URL-encoded "bucket/key[?versionId=v]"."""
    path, _, version = header.partition("?versionId=")
    bucket, slash, key = unquote(path).lstrip("/").partition("/")
    if not bucket or not slash or not key:
        raise InvalidArgument("Copy Source must mention the source bucket and key: sourcebucket/sourcekey")
    try:
        check_key(key)
    except KeyTooLongError as exc:
        raise InvalidArgument(f"Copy Source key is invalid: {exc.message}") from exc
    return bucket, key, unquote(version) or None
