"""Static content (CloudFront's part): an origin group over the regions' website buckets, with failover.

A request path maps to an object key the way an S3 website does (a path ending in "/" names its index
document), and a path that names no file (no extension in its last segment) falls back to the home
page, as a single-page app needs. The origins are the regions' buckets (bookstore-web-<region>), read
through each region's S3 API with SigV4 and the topology's credentials, like CloudFront reading a
bucket with an origin access identity. The edge stands where CloudFront's edge locations stand, on the
client's side, so its requests do not cross the link simulator.

The group tries the primary (the home bucket) first and fails over to the next origin, once, when the
primary answers 403, 404, 500, 502, 503 or 504, or fails to answer (connection failure or timeout),
for GET, HEAD and OPTIONS only. An origin that failed to answer is passed over until its health check
sees it answer again (the circuit breaker in bookstore.edge.health). A 404 that says the object was
deleted (`x-amz-delete-marker: true`: its latest version is a delete marker) is an answer, not a
failure: a file deleted from the storefront is not served on from a replica that has not heard yet.

What reaches the browser is guarded (`guarded`): the storefront's own files come with a strict
Content-Security-Policy (scripts, styles and connections from the shop's origin only, no inline
script); any other object in a bucket is served inert, under a sandboxing policy that runs no script,
and one of a type a browser would run (HTML, XML, JavaScript...) as a download. So an object that
reaches a bucket by any way cannot put a script on the shop's origin, where the operator page lives.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import quote

from bookstore.edge.upstream import Answer, Origin, UpstreamError
from bookstore.objectstore.sigv4 import signing_key

FAILOVER_STATUSES = frozenset({403, 404, 500, 502, 503, 504})
FAILOVER_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
INDEX_DOCUMENT = "index.html"
EMPTY_SHA256 = hashlib.sha256(b"").hexdigest()
MAX_KEY_BYTES = 1024
# Headers of a stored object that reach the client; the store's x-amz-* internals do not.
PASSED_HEADERS = frozenset(
    {
        b"content-type",
        b"content-length",
        b"content-range",
        b"content-encoding",
        b"content-language",
        b"content-disposition",
        b"cache-control",
        b"expires",
        b"etag",
        b"last-modified",
        b"accept-ranges",
    }
)
# Conditional and range headers of the client's request that the origin answers itself.
FORWARDED_HEADERS = (b"range", b"if-none-match", b"if-modified-since", b"if-match", b"if-unmodified-since")
DELETE_MARKER_HEADER = b"x-amz-delete-marker"
# The storefront's own pages: everything from the shop's origin, nothing inline, never framed.
STOREFRONT_CSP = (
    b"default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; "
    b"connect-src 'self'; font-src 'self'; object-src 'none'; base-uri 'none'; form-action 'self'; "
    b"frame-ancestors 'none'"
)
# Anything else: a sandbox (an opaque origin, no script), loading nothing.
INERT_CSP = b"sandbox; default-src 'none'; frame-ancestors 'none'"
# Types a browser shows without running anything; other objects not the storefront's are downloads.
INERT_TYPES = (
    b"image/",
    b"audio/",
    b"video/",
    b"font/",
    b"text/plain",
    b"application/json",
    b"application/octet-stream",
)


class BadPath(ValueError):
    """A request path that names no object the edge would ever serve."""


def object_key(path: str) -> str:
    """The object key of a decoded request path, the index document for a directory.

    Raises BadPath for paths with dot segments, control characters, backslashes or keys over 1,024 bytes.
    """
    if not path.startswith("/"):
        raise BadPath("the path must start with '/'")
    key = path[1:]
    if key == "" or key.endswith("/"):
        key += INDEX_DOCUMENT
    if any(ord(c) < 0x20 or ord(c) == 0x7F for c in key) or "\\" in key:
        raise BadPath("the path holds control characters or backslashes")
    segments = key.split("/")
    if any(s in ("", ".", "..") for s in segments):
        raise BadPath("the path holds empty, '.' or '..' segments")
    if len(key.encode("utf-8")) > MAX_KEY_BYTES:
        raise BadPath(f"the path is longer than {MAX_KEY_BYTES} bytes")
    return key


def spa_fallback(key: str) -> bool:
    """Whether a missing key is a page of the single-page app (no file extension) rather than a file."""
    last = key.rsplit("/", 1)[-1]
    return key != INDEX_DOCUMENT and "." not in last


class Signer:
    """AWS Signature Version 4 for the edge's GET/HEAD requests to a region's S3 API (no body)."""

    def __init__(self, access_key_id: str, secret_access_key: str) -> None:
        self.access_key_id = access_key_id
        self.secret = secret_access_key
        self._keys: dict[tuple[str, str], bytes] = {}

    def _key(self, date: str, region: str) -> bytes:
        cached = self._keys.get((date, region))
        if cached is None:
            cached = signing_key(self.secret, date, region, "s3")
            if len(self._keys) > 64:
                self._keys.clear()
            self._keys[(date, region)] = cached
        return cached

    def headers(
        self, method: str, path: str, authority: str, region: str, now: dt.datetime | None = None
    ) -> list[tuple[bytes, bytes]]:
        """The headers (without Host, which the caller sends as `authority`) signing the request."""
        when = now or dt.datetime.now(dt.UTC)
        amz_date = when.strftime("%Y%m%dT%H%M%SZ")
        date = amz_date[:8]
        canonical = (
            f"{method}\n{path}\n\nhost:{authority}\nx-amz-content-sha256:{EMPTY_SHA256}\n"
            f"x-amz-date:{amz_date}\n\nhost;x-amz-content-sha256;x-amz-date\n{EMPTY_SHA256}"
        )
        scope = f"{date}/{region}/s3/aws4_request"
        to_sign = f"AWS4-HMAC-SHA256\n{amz_date}\n{scope}\n{hashlib.sha256(canonical.encode()).hexdigest()}"
        signature = hmac.new(self._key(date, region), to_sign.encode(), hashlib.sha256).hexdigest()
        authorization = (
            f"AWS4-HMAC-SHA256 Credential={self.access_key_id}/{scope}, "
            f"SignedHeaders=host;x-amz-content-sha256;x-amz-date, Signature={signature}"
        )
        return [
            (b"x-amz-date", amz_date.encode()),
            (b"x-amz-content-sha256", EMPTY_SHA256.encode()),
            (b"authorization", authorization.encode()),
        ]


@dataclass(frozen=True)
class Bucket:
    """One origin of the group: a region's bucket behind its S3 API."""

    region: str
    bucket: str
    origin: Origin

    def target(self, key: str) -> str:
        return f"/{self.bucket}/{quote(key, safe='/~')}" if key else f"/{self.bucket}"

    async def fetch(
        self,
        signer: Signer,
        method: str,
        key: str,
        extra: list[tuple[bytes, bytes]],
        timeout_s: float,
    ) -> Answer:
        """GET/HEAD of an object (or of the bucket itself when `key` is empty), signed."""
        path = self.target(key)
        signed = signer.headers(method, path, self.origin.authority.decode("ascii"), self.region)
        return await self.origin.request(method, path.encode("ascii"), [*signed, *extra], timeout_s=timeout_s)


@dataclass
class Fetched:
    """What the origin group served: the answer, from which region, and the origins that failed first."""

    answer: Answer | None
    region: str | None
    failed: list[tuple[str, str]]
    error: str | None = None
    # Whether an origin that answered said it has no such object (403/404), whatever the others did.
    missing: bool = False
    # Whether the last origin tried timed out (rather than refused or broke the connection).
    timed_out: bool = False


def failed_over(answer: Answer) -> bool:
    return answer.status in FAILOVER_STATUSES


def deleted(answer: Answer) -> bool:
    """Whether the origin says the object was deleted (S3: a 404 with x-amz-delete-marker: true)."""
    return answer.status == 404 and answer.header(DELETE_MARKER_HEADER) == b"true"


def guarded(headers: list[tuple[bytes, bytes]], own: bool) -> list[tuple[bytes, bytes]]:
    """The headers of a static answer: the storefront's own file (`own`) under the strict policy, any other
    object inert (sandboxed; a type a browser would run becomes a download); no sniffing either way."""
    out = [(b"x-content-type-options", b"nosniff")]
    if own:
        return [*headers, *out, (b"content-security-policy", STOREFRONT_CSP)]
    content_type = next((v for k, v in headers if k == b"content-type"), b"").split(b";")[0].strip().lower()
    # An SVG is an image/ type: shown in an <img>, inert; opened as a document, the sandbox runs no script.
    active = not content_type.startswith(INERT_TYPES)
    for name, value in headers:
        if active and name in (b"content-type", b"content-disposition"):
            continue
        out.append((name, value))
    if active:
        out += [(b"content-type", b"application/octet-stream"), (b"content-disposition", b"attachment")]
    return [*out, (b"content-security-policy", INERT_CSP)]


async def fetch_from_group(
    origins: list[Bucket],
    signer: Signer,
    method: str,
    key: str,
    extra: list[tuple[bytes, bytes]],
    timeout_s: float,
    on_failure: Callable[[str, str], None] | None = None,
) -> Fetched:
    """Try the first origin, then (for GET/HEAD/OPTIONS, on a failover status or no answer) the next one.

    `on_failure`, when given, is told (region, reason) of every origin that did not answer or answered 5xx.
    """
    failed: list[tuple[str, str]] = []
    attempts = origins[:2] if method in FAILOVER_METHODS else origins[:1]
    last: Fetched = Fetched(None, None, failed, "no origin")
    missing = False
    for bucket in attempts:
        try:
            answer = await bucket.fetch(signer, method, key, extra, timeout_s)
        except UpstreamError as exc:
            failed.append((bucket.region, str(exc)))
            if on_failure is not None:
                on_failure(bucket.region, str(exc))
            last = Fetched(None, None, failed, str(exc), timed_out=exc.timeout)
            continue
        last = Fetched(answer, bucket.region, failed)
        if deleted(answer):
            last.missing = True
            return last
        if not failed_over(answer):
            return last
        failed.append((bucket.region, f"answered {answer.status}"))
        missing = missing or answer.status in (403, 404)
        if answer.status >= 500 and on_failure is not None:
            on_failure(bucket.region, f"answered {answer.status}")
    # Every origin tried failed: the last answer stands (the client sees the secondary's 404, say).
    last.failed = failed[:-1] if last.answer is not None else failed
    last.missing = missing
    return last
