"""AWS Signature Version 4 for S3: Authorization headers, presigned URLs and aws-chunked bodies.

Any region in the credential scope is accepted (the request is then checked with that region), so
one endpoint can take requests signed for another region, as forwarding between regions needs.
"""

from __future__ import annotations

import base64
import calendar
import hashlib
import hmac
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from datetime import UTC
from email.utils import parsedate_to_datetime
from urllib.parse import quote, unquote

from bookstore.objectstore import checksums
from bookstore.objectstore.errors import (
    AccessDenied,
    AuthorizationHeaderMalformed,
    AuthorizationQueryParametersError,
    BadDigest,
    IncompleteBody,
    InvalidAccessKeyId,
    InvalidDigest,
    InvalidRequest,
    RequestTimeTooSkewed,
    SignatureDoesNotMatch,
    XAmzContentSHA256Mismatch,
)

ALGORITHM = "AWS4-HMAC-SHA256"
UNSIGNED_PAYLOAD = "UNSIGNED-PAYLOAD"
STREAMING_SIGNED = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD"
STREAMING_SIGNED_TRAILER = "STREAMING-AWS4-HMAC-SHA256-PAYLOAD-TRAILER"
STREAMING_UNSIGNED_TRAILER = "STREAMING-UNSIGNED-PAYLOAD-TRAILER"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_SKEW_S = 15 * 60
MAX_EXPIRES_S = 7 * 24 * 3600
_STREAMING = (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER, STREAMING_UNSIGNED_TRAILER)
_QUERY_SAFE = "-_.~"
# Text that is its own canonical URI-encoding: letters, digits and _QUERY_SAFE as they are, and the
# escapes (upper-case) of the other ASCII characters, as a presigned URL's X-Amz-Credential holds %2F.
# Written as runs between escapes: an alternation per character made the regex engine ten times slower.
_KEPT = "[A-Za-z0-9_.~-]*"
_CANONICAL = re.compile(f"{_KEPT}(?:%(?:[01][0-9A-F]|2[0-9A-CF]|3[A-F]|40|5[B-E]|60|7[B-DF]){_KEPT})*")
# A path that encoding would leave as it is (and that holds nothing encoded).
_PLAIN_PATH = re.compile(r"[A-Za-z0-9_.~/-]*")
# What an aws-chunked body may hold whole: a chunk header line, and the trailers after the last chunk.
MAX_CHUNK_LINE = 4096
MAX_TRAILERS = 16 * 1024
# A trailer's name: an HTTP token (RFC 9110), as x-amz-checksum-crc32c or x-amz-trailer-signature.
_TRAILER_NAME = re.compile(r"[!#$%&'*+.^_`|~0-9A-Za-z-]+")


@dataclass(frozen=True)
class Authorized:
    """A request whose signature checked out: who signed it, and what its payload must match."""

    access_key: str
    # The x-amz-content-sha256 the signature covers: a hex digest, UNSIGNED-PAYLOAD or a STREAMING-* mode.
    content_sha256: str
    signature: str
    signing_key: bytes
    amz_date: str
    scope: str
    presigned: bool


def signing_key(secret: str, date: str, region: str, service: str) -> bytes:
    """The SigV4 signing key of a secret access key for one day (YYYYMMDD), region and service."""
    key = _hmac(f"AWS4{secret}".encode(), date)
    key = _hmac(key, region)
    key = _hmac(key, service)
    return _hmac(key, "aws4_request")


def _hmac(key: bytes, message: str) -> bytes:
    return hmac.digest(key, message.encode(), "sha256")


def _timestamp(amz_date: str) -> float:
    """Epoch seconds of a YYYYMMDDTHHMMSSZ time, or -1; parsed by hand, as strptime is slow."""
    d = amz_date
    if len(d) != 16 or d[8] != "T" or d[15] != "Z" or not (d[:8] + d[9:15]).isdigit():
        return -1.0
    try:
        return float(
            calendar.timegm(
                (int(d[0:4]), int(d[4:6]), int(d[6:8]), int(d[9:11]), int(d[11:13]), int(d[13:15]))
            )
        )
    except ValueError:
        return -1.0


def _basic_time(date: str) -> str:
    """A Date header's time as YYYYMMDDTHHMMSSZ, which SigV4 signs when there is no X-Amz-Date ("" if bad).

    SigV4 takes the request time from X-Amz-Date or else from Date, in ISO 8601 basic form or as an
    HTTP date.
    """
    if _timestamp(date) >= 0:
        return date
    try:
        when = parsedate_to_datetime(date)
    except (TypeError, ValueError, IndexError):
        return ""
    if when.tzinfo is None:
        # "-0000" (what botocore's formatdate writes): the time is UTC, its sender's zone unsaid (RFC 2822).
        when = when.replace(tzinfo=UTC)
    return when.astimezone(UTC).strftime("%Y%m%dT%H%M%SZ")


def _uri_encoded(text: str) -> str:
    """A query name or value URI-encoded the AWS way (decoded first, as it came encoded somehow)."""
    return quote(unquote(text), safe=_QUERY_SAFE)


def canonical_query(raw_query: str, skip: str | None = None) -> str:
    """The canonical query string: every pair URI-encoded the AWS way, sorted; `skip` left out."""
    if not raw_query:
        return ""
    canonical = _CANONICAL.fullmatch
    pairs = []
    for part in raw_query.split("&"):
        if not part:
            continue
        name, _, value = part.partition("=")
        # A presigned URL's names and values are their own canonical encoding already: no call for them.
        if not canonical(name):
            name = _uri_encoded(name)
        if name == skip:
            continue
        pairs.append((name, value if canonical(value) else _uri_encoded(value)))
    pairs.sort()
    return "&".join([f"{n}={v}" for n, v in pairs])


class SigV4:
    """Checks S3 requests signed with AWS Signature Version 4 against known access keys."""

    def __init__(self, credentials: Mapping[str, str], now: Callable[[], float]) -> None:
        self._credentials = dict(credentials)
        self._now = now
        self._keys: dict[tuple[str, str, str, str], bytes] = {}

    def authorize(self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]) -> Authorized:
        """Check the request's signature; `headers` has lower-case names (repeated ones joined by ",")."""
        if "authorization" in headers:
            return self._header_auth(method, raw_path, raw_query, headers)
        if "X-Amz-Signature=" in raw_query or "x-amz-signature=" in raw_query.lower():
            return self._query_auth(method, raw_path, raw_query, headers)
        if "AWSAccessKeyId=" in raw_query:
            raise InvalidRequest(
                "Signature Version 2 is not supported: presign with AWS4-HMAC-SHA256 "
                "(boto3: Config(signature_version='s3v4'))"
            )
        raise AccessDenied(
            "Access Denied: anonymous requests are refused; sign them with AWS Signature Version 4"
        )

    def payload(self, auth: Authorized, headers: Mapping[str, str]) -> PayloadReader:
        """A reader of the request's body: checks its signed hash, or decodes aws-chunked, as it arrives."""
        mode = auth.content_sha256
        if mode in _STREAMING:
            if mode != STREAMING_UNSIGNED_TRAILER and auth.presigned:
                raise InvalidRequest("A presigned URL cannot carry signed chunks")
            return _Dechunker(auth, headers.get("x-amz-decoded-content-length"))
        if mode == UNSIGNED_PAYLOAD:
            return PayloadReader()
        return _HashedPayload(mode.lower())

    def signing_key(self, secret: str, date: str, region: str, service: str) -> bytes:
        cached = self._keys.get((secret, date, region, service))
        if cached is None:
            cached = signing_key(secret, date, region, service)
            if len(self._keys) > 256:
                self._keys.clear()
            self._keys[(secret, date, region, service)] = cached
        return cached

    def policy_key(self, credential: str, amz_date: str) -> bytes | None:
        """The signing key of a POST policy's credential (KEY/DATE/REGION/s3/aws4_request), or None.

        None when the access key is unknown; AuthorizationQueryParametersError when it is malformed.
        """
        try:
            _, secret, date, region, service = self._credential(
                credential, amz_date, AuthorizationQueryParametersError
            )
        except InvalidAccessKeyId:
            return None
        return self.signing_key(secret, date, region, service)

    # Internals.

    def _header_auth(
        self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]
    ) -> Authorized:
        value = headers["authorization"]
        if not value.startswith(ALGORITHM + " "):
            raise InvalidRequest(
                "The authorization mechanism you have provided is not supported. Please use AWS4-HMAC-SHA256."
            )
        fields: dict[str, str] = {}
        for part in value[len(ALGORITHM) + 1 :].split(","):
            name, _, field = part.strip().partition("=")
            fields[name] = field
        try:
            credential, signed_headers, signature = (
                fields["Credential"],
                fields["SignedHeaders"],
                fields["Signature"],
            )
        except KeyError as exc:
            raise AuthorizationHeaderMalformed(
                "The authorization header is malformed: it needs Credential, SignedHeaders and Signature"
            ) from exc
        amz_date = headers.get("x-amz-date") or _basic_time(headers.get("date", ""))
        content_sha256 = headers.get("x-amz-content-sha256")
        if content_sha256 is None:
            raise InvalidRequest("Missing required header for this request: x-amz-content-sha256")
        access_key, secret, date, region, service = self._credential(
            credential, amz_date, AuthorizationHeaderMalformed
        )
        when = _timestamp(amz_date)
        if when < 0:
            raise AccessDenied("AWS authentication requires a valid x-amz-date header (YYYYMMDDTHHMMSSZ)")
        if abs(self._now() - when) > MAX_SKEW_S:
            raise RequestTimeTooSkewed(
                "The difference between the request time and the server's time is too large."
            )
        names = signed_headers.split(";")
        if "host" not in names:
            raise AuthorizationHeaderMalformed("The host header must be signed")
        _refuse_unsigned(headers, names)
        scope = f"{date}/{region}/{service}/aws4_request"
        key = self.signing_key(secret, date, region, service)
        self._check(
            key,
            signature,
            amz_date,
            scope,
            method,
            raw_path,
            canonical_query(raw_query),
            names,
            headers,
            content_sha256,
        )
        return Authorized(access_key, content_sha256, signature, key, amz_date, scope, presigned=False)

    def _query_auth(
        self, method: str, raw_path: str, raw_query: str, headers: Mapping[str, str]
    ) -> Authorized:
        params: dict[str, str] = {}
        for part in raw_query.split("&"):
            name, _, value = part.partition("=")
            if name.startswith(("X-Amz-", "x-amz-")):
                # unquote() returns text with no "%" as it is; not calling it is quicker still.
                params[unquote(name) if "%" in name else name] = unquote(value) if "%" in value else value
        try:
            algorithm, credential = params["X-Amz-Algorithm"], params["X-Amz-Credential"]
            amz_date, expires = params["X-Amz-Date"], params["X-Amz-Expires"]
            signed_headers, signature = params["X-Amz-SignedHeaders"], params["X-Amz-Signature"]
        except KeyError as exc:
            raise AuthorizationQueryParametersError(
                "Query-string authentication version 4 requires the X-Amz-Algorithm, X-Amz-Credential, "
                "X-Amz-Signature, X-Amz-Date, X-Amz-SignedHeaders, and X-Amz-Expires parameters."
            ) from exc
        if algorithm != ALGORITHM:
            raise AuthorizationQueryParametersError("X-Amz-Algorithm only supports 'AWS4-HMAC-SHA256'")
        if not expires.isdigit() or not 1 <= int(expires) <= MAX_EXPIRES_S:
            # S3 answers 403 (not 400) for an expiry out of its range: the URL grants nothing.
            raise AccessDenied("X-Amz-Expires must be between 1 and 604800 seconds")
        access_key, secret, date, region, service = self._credential(
            credential, amz_date, AuthorizationQueryParametersError
        )
        when = _timestamp(amz_date)
        if when < 0:
            raise AuthorizationQueryParametersError(
                "X-Amz-Date must be in the ISO8601 basic format YYYYMMDDTHHMMSSZ"
            )
        now = self._now()
        if now < when - MAX_SKEW_S:
            raise AccessDenied("Request is not valid yet")
        if now > when + int(expires):
            raise AccessDenied("Request has expired")
        names = signed_headers.split(";")
        if "host" not in names:
            raise AuthorizationQueryParametersError("The host header must be signed")
        # A presigned URL authorizes one request: an x-amz-* header it did not sign (a copy source,
        # metadata, tags) would make it another.
        _refuse_unsigned(headers, names)
        content_sha256 = UNSIGNED_PAYLOAD
        if "x-amz-content-sha256" in names:
            content_sha256 = headers.get("x-amz-content-sha256", UNSIGNED_PAYLOAD)
        if content_sha256 in _STREAMING:
            raise InvalidRequest("A presigned URL cannot carry an aws-chunked body")
        scope = f"{date}/{region}/{service}/aws4_request"
        key = self.signing_key(secret, date, region, service)
        self._check(
            key,
            signature,
            amz_date,
            scope,
            method,
            raw_path,
            canonical_query(raw_query, skip="X-Amz-Signature"),
            names,
            headers,
            UNSIGNED_PAYLOAD,
        )
        return Authorized(access_key, content_sha256, signature, key, amz_date, scope, presigned=True)

    def _credential(
        self, credential: str, amz_date: str, malformed: Callable[[str], Exception]
    ) -> tuple[str, str, str, str, str]:
        parts = credential.split("/")
        if len(parts) != 5 or parts[4] != "aws4_request":
            raise malformed(
                f"The credential is malformed: expected KEY/DATE/REGION/s3/aws4_request, got {credential!r}"
            )
        access_key, date, region, service, _ = parts
        if service != "s3":
            raise malformed(f"The credential names service {service!r}; this endpoint is s3")
        secret = self._credentials.get(access_key)
        if secret is None:
            raise InvalidAccessKeyId("The AWS Access Key Id you provided does not exist in our records.")
        if not amz_date.startswith(date):
            raise malformed("The credential's date does not match the request's X-Amz-Date")
        return access_key, secret, date, region, service

    def _check(
        self,
        key: bytes,
        signature: str,
        amz_date: str,
        scope: str,
        method: str,
        raw_path: str,
        query: str,
        names: list[str],
        headers: Mapping[str, str],
        payload: str,
    ) -> None:
        header_lines = "".join(f"{n}:{_trimmed(headers.get(n, ''))}\n" for n in names)
        signed = ";".join(names)
        # S3 signs the path as the client sent it; clients that encoded it differently still sign the
        # standard encoding of the decoded path, which is tried second (a path with nothing encoded and
        # nothing to encode is its own standard encoding).
        candidates = [raw_path]
        if not _PLAIN_PATH.fullmatch(raw_path):
            standard = quote(unquote(raw_path), safe="/~")
            if standard != raw_path:
                candidates.append(standard)
        # Header values were decoded one character per byte: signed as received (Latin-1 back to the
        # bytes, so a UTF-8 x-amz-meta-* value is signed as the UTF-8 the client signed), else as text.
        lines = [header_lines.encode("latin-1")]
        if not header_lines.isascii():
            lines.append(header_lines.encode())
        for path in candidates:
            for encoded in lines:
                canonical = (
                    f"{method}\n{path}\n{query}\n".encode() + encoded + f"\n{signed}\n{payload}".encode()
                )
                to_sign = f"{ALGORITHM}\n{amz_date}\n{scope}\n{hashlib.sha256(canonical).hexdigest()}"
                expected = hmac.digest(key, to_sign.encode(), "sha256").hex()
                if _same(expected, signature):
                    return
        raise SignatureDoesNotMatch(
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method."
        )


class PayloadReader:
    """The payload of a request, fed as it arrives: `feed` returns the content, `finish` its trailers.

    This one passes an unsigned payload through. A payload that does not check out raises an S3 error
    from `feed` or `finish`; nothing fed before may be committed until `finish` has returned.
    """

    # True when the content is decoded from another framing (aws-chunked): Content-Length is not its size.
    decodes = False

    def feed(self, data: bytes) -> bytes:
        return data

    def finish(self) -> dict[str, str]:
        return {}


class _HashedPayload(PayloadReader):
    """A payload whose SHA-256 the signature covers (x-amz-content-sha256 holds it)."""

    def __init__(self, expected: str) -> None:
        self.expected = expected
        self.hash = hashlib.sha256()

    def feed(self, data: bytes) -> bytes:
        self.hash.update(data)
        return data

    def finish(self) -> dict[str, str]:
        if self.hash.hexdigest() != self.expected:
            raise XAmzContentSHA256Mismatch(
                "The provided 'x-amz-content-sha256' header does not match what was computed"
            )
        return {}


class _Dechunker(PayloadReader):
    """An aws-chunked body decoded as it arrives: chunk signatures, then trailers and their signature.

    Memory stays bounded whatever the chunk sizes: a chunk's data passes through as it comes; only a
    chunk header line (MAX_CHUNK_LINE) and the trailers (MAX_TRAILERS) are held whole.
    """

    decodes = True

    def __init__(self, auth: Authorized, declared: str | None) -> None:
        self.auth = auth
        self.signed = auth.content_sha256 in (STREAMING_SIGNED, STREAMING_SIGNED_TRAILER)
        self.declared = declared.strip() if declared is not None else None
        self.previous = auth.signature
        self.buffer = bytearray()
        self.state = "size"
        self.remaining = 0
        self.given = ""
        self.chunk_hash = hashlib.sha256()
        self.decoded = 0

    def feed(self, data: bytes) -> bytes:
        self.buffer += data
        out = bytearray()
        while self.buffer:
            if self.state == "size":
                eol = self.buffer.find(b"\r\n")
                if eol < 0:
                    if len(self.buffer) > MAX_CHUNK_LINE:
                        raise IncompleteBody("An aws-chunked chunk header is too long")
                    break
                self._start_chunk(bytes(self.buffer[:eol]).decode("latin-1"))
                del self.buffer[: eol + 2]
            elif self.state == "data":
                piece = bytes(self.buffer[: self.remaining])
                del self.buffer[: len(piece)]
                self.chunk_hash.update(piece)
                out += piece
                self.remaining -= len(piece)
                self.decoded += len(piece)
                if self.remaining == 0:
                    self._end_chunk()
                    self.state = "crlf"
            elif self.state == "crlf":
                if len(self.buffer) < 2:
                    break
                if self.buffer[:2] != b"\r\n":
                    raise IncompleteBody("An aws-chunked chunk is not followed by CRLF")
                del self.buffer[:2]
                self.state = "size"
            else:  # trailers: held until the end
                if len(self.buffer) > MAX_TRAILERS:
                    raise IncompleteBody("The trailers of the aws-chunked body are too long")
                break
        return bytes(out)

    def _start_chunk(self, line: str) -> None:
        size_text, _, extension = line.partition(";")
        try:
            size = int(size_text.strip(), 16)
        except ValueError as exc:
            raise IncompleteBody(f"Bad aws-chunked chunk size {size_text[:20]!r}") from exc
        if size < 0:
            raise IncompleteBody(f"Bad aws-chunked chunk size {size_text[:20]!r}")
        if self.declared is not None and self.declared.isdigit() and self.decoded + size > int(self.declared):
            raise IncompleteBody(
                f"The aws-chunked body holds more than x-amz-decoded-content-length ({self.declared}) bytes"
            )
        self.given = extension.partition("chunk-signature=")[2].strip()
        self.chunk_hash = hashlib.sha256()
        self.remaining = size
        if size == 0:
            self._end_chunk()
            self.state = "trailers"
        else:
            self.state = "data"

    def _end_chunk(self) -> None:
        if not self.signed:
            return
        auth = self.auth
        to_sign = (
            f"AWS4-HMAC-SHA256-PAYLOAD\n{auth.amz_date}\n{auth.scope}\n{self.previous}\n{EMPTY_SHA256}\n"
            f"{self.chunk_hash.hexdigest()}"
        )
        expected = hmac.digest(auth.signing_key, to_sign.encode(), "sha256").hex()
        if not _same(expected, self.given):
            raise SignatureDoesNotMatch("A chunk signature of the aws-chunked body does not match")
        self.previous = self.given

    def finish(self) -> dict[str, str]:
        if self.state == "size":
            raise IncompleteBody("The aws-chunked body ended inside a chunk header")
        if self.state != "trailers":
            raise IncompleteBody("The aws-chunked body ended inside a chunk")
        lines = _trailer_lines(bytes(self.buffer))
        auth = self.auth
        if auth.content_sha256 == STREAMING_SIGNED_TRAILER:
            given = dict(lines).get("x-amz-trailer-signature", "")
            canonical = "".join(f"{n}:{v}\n" for n, v in lines if n != "x-amz-trailer-signature")
            to_sign = (
                f"AWS4-HMAC-SHA256-TRAILER\n{auth.amz_date}\n{auth.scope}\n{self.previous}\n"
                f"{hashlib.sha256(canonical.encode()).hexdigest()}"
            )
            expected = hmac.digest(auth.signing_key, to_sign.encode(), "sha256").hex()
            if not _same(expected, given):
                raise SignatureDoesNotMatch("The trailer signature of the aws-chunked body does not match")
        if self.declared is not None and self.declared != str(self.decoded):
            raise IncompleteBody(
                f"The aws-chunked body holds {self.decoded} bytes; "
                f"x-amz-decoded-content-length says {self.declared[:20]}"
            )
        return {n: v for n, v in lines if n != "x-amz-trailer-signature"}


_ASCII_SPACES = re.compile(r"[ \t\r\n\f\v]+")


def _trimmed(value: str) -> str:
    """A header value as SigV4 signs it: spaces trimmed and runs of them made one.

    Only ASCII spaces: the value holds one character per byte received, and a UTF-8 character's
    bytes can read as Latin-1 spaces (U+00A0, U+0085) that str.split would take out.
    """
    if "  " not in value and value.isprintable() and value.strip(" ") == value:
        return value  # no tab, line break or run of spaces: nothing to trim (most values)
    return _ASCII_SPACES.sub(" ", value).strip(" ")


def _trailer_lines(section: bytes) -> list[tuple[str, str]]:
    """The trailers after the last chunk, held to their framing: `name:value` lines, each ending in CRLF,
    then an empty line that ends the body. Nothing may follow it, and a value loses only spaces and tabs
    around it: the bytes outside what the trailer signature covers are exact, not merely tolerated."""
    if section == b"\r\n":
        return []
    text, end, rest = section.partition(b"\r\n\r\n")
    if not end or rest:
        raise IncompleteBody("The trailers of the aws-chunked body do not end with an empty line")
    lines: list[tuple[str, str]] = []
    for raw in text.decode("latin-1").split("\r\n"):
        name, colon, value = raw.partition(":")
        if not colon or not _TRAILER_NAME.fullmatch(name):
            raise IncompleteBody(f"A trailer of the aws-chunked body is malformed: {raw[:40]!r}")
        lines.append((name.lower(), value.strip(" \t")))
    return lines


def _same(expected: str, given: str) -> bool:
    """Constant-time comparison of a computed hex signature with one a client sent, as bytes.

    compare_digest refuses str holding non-ASCII characters (TypeError); a client's can hold anything.
    """
    return hmac.compare_digest(expected.encode(), given.encode("utf-8", "surrogatepass"))


def _refuse_unsigned(headers: Mapping[str, str], signed: list[str]) -> None:
    """AccessDenied, as S3 answers, when an x-amz-* header of the request is not among the signed ones."""
    unsigned = [n for n in headers if n.startswith("x-amz-") and n not in signed]
    if unsigned:
        raise AccessDenied(
            "There were headers present in the request which were not signed: " + ", ".join(sorted(unsigned))
        )


# The algorithm of each checksum header.
_BY_HEADER = {header: name for name, header in checksums.HEADERS.items()}


class Checksums:
    """Content-MD5 and x-amz-checksum-{crc32,crc32c,crc64nvme,sha1,sha256} of a body, computed as it arrives.

    Only what the request names is computed: the checksum headers it carries and the trailers its
    x-amz-trailer header announces. A body that names none gets the default one (CRC64NVME), computed
    and returned as verified, as S3 stores one for every object.
    """

    def __init__(self, headers: Mapping[str, str]) -> None:
        named = _BY_HEADER.keys() & headers.keys()
        trailer = headers.get("x-amz-trailer")
        if trailer is not None:
            named |= _BY_HEADER.keys() & {t.strip().lower() for t in trailer.split(",")}
        if len(named) > 1:
            raise InvalidRequest(
                "Expecting a single x-amz-checksum- header. Multiple checksum Types are not allowed."
            )
        self.defaulted = not named
        # The header (or trailer) of the one checksum computed, and its hasher.
        self.header = named.pop() if named else checksums.HEADERS[checksums.DEFAULT]
        self.hasher = checksums.hasher(_BY_HEADER[self.header])
        self.md5 = hashlib.md5(usedforsecurity=False) if "content-md5" in headers else None

    def update(self, data: bytes) -> None:
        if self.md5 is not None:
            self.md5.update(data)
        self.hasher.update(data)

    def verify(self, fields: Mapping[str, str]) -> dict[str, str]:
        """Check the values `fields` (headers and trailers) give; returns the verified ones, to echo."""
        md5 = fields.get("content-md5")
        if md5 is not None and self.md5 is not None:
            try:
                expected = base64.b64decode(md5, validate=True)
            except ValueError as exc:
                raise InvalidDigest("The Content-MD5 you specified is not valid") from exc
            if len(expected) != 16:
                raise InvalidDigest("The Content-MD5 you specified is not valid")
            if expected != self.md5.digest():
                raise BadDigest("The Content-MD5 you specified did not match what we received.")
        computed = base64.b64encode(self.hasher.digest()).decode()
        if self.defaulted:
            return {self.header: computed}
        verified: dict[str, str] = {}
        for name in checksums.HEADERS.values():
            given = fields.get(name)
            if given is None:
                continue
            if name != self.header:
                raise InvalidRequest(f"The trailer {name} was not announced in the x-amz-trailer header")
            if computed != given.strip():
                algorithm = name.rpartition("-")[2].upper()
                raise BadDigest(f"The {algorithm} you specified did not match the calculated checksum.")
            verified[name] = given.strip()
        return verified
