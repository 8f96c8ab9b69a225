"""Checks of S3 request input that reaches response headers or storage: values, overrides, metadata.

The rule: anything taken from the query string that the API echoes in a response header is refused
with 400 when the HTTP server could not send it (control characters, characters beyond Latin-1);
otherwise the server would drop the connection after the store had already acted on the request.
"""

from __future__ import annotations

import re
from collections.abc import Mapping

from bookstore.objectstore import encoded_words
from bookstore.objectstore.errors import InvalidArgument, MetadataTooLarge

# S3's limit on user metadata: the UTF-8 bytes of every x-amz-meta-* name (after the prefix) and value.
MAX_METADATA_BYTES = 2 * 1024
META_PREFIX = "x-amz-meta-"
# Query parameters whose values come back in response headers.
RESPONSE_OVERRIDES = {
    "response-content-type": "Content-Type",
    "response-content-language": "Content-Language",
    "response-expires": "Expires",
    "response-cache-control": "Cache-Control",
    "response-content-disposition": "Content-Disposition",
    "response-content-encoding": "Content-Encoding",
}
_ECHOED_IDS = ("versionId", "uploadId")
# What an HTTP/1.1 header value may not hold (tab is allowed); the same set uvicorn refuses to send.
_NOT_IN_HEADER = re.compile(r"[\x00-\x08\x0a-\x1f\x7f]|[^\x00-\xff]")


def header_value(name: str, value: str) -> str:
    """`value` when it can be sent as an HTTP header value, else InvalidArgument naming `name`."""
    if _NOT_IN_HEADER.search(value):
        raise InvalidArgument(
            f"{name} holds a control character or a character beyond Latin-1, which a header cannot carry"
        )
    return value


def check_query(query: Mapping[str, str]) -> None:
    """Refuse query values that would be echoed in a response header and cannot be (InvalidArgument)."""
    for name in _ECHOED_IDS:
        if name in query:
            header_value(name, query[name])
    for name in RESPONSE_OVERRIDES:
        if name in query:
            header_value(name, query[name])


def response_overrides(query: Mapping[str, str]) -> dict[str, str]:
    """The response headers that a GET's response-* query parameters ask for (checked by check_query)."""
    return {header: query[name] for name, header in RESPONSE_OVERRIDES.items() if name in query}


def user_metadata(headers: Mapping[str, str], *, as_received: bool = True) -> dict[str, str]:
    """The x-amz-meta-* headers by name (lower case, prefix removed), their values as text (RFC 2047
    encoded words decoded, see encoded_words); MetadataTooLarge above S3's 2 KB of UTF-8.

    `as_received`: the values are header bytes read as Latin-1 (an HTTP request's), not text already
    (a POST form's fields).
    """
    read = encoded_words.from_header if as_received else encoded_words.decode
    metadata = {
        name[len(META_PREFIX) :]: read(value)
        for name, value in headers.items()
        if name.startswith(META_PREFIX)
    }
    size = sum(len(name) + len(value.encode("utf-8", "surrogatepass")) for name, value in metadata.items())
    if size > MAX_METADATA_BYTES:
        raise MetadataTooLarge(
            f"Your metadata headers exceed the maximum allowed metadata size: {size} bytes, "
            f"at most {MAX_METADATA_BYTES}"
        )
    return metadata
