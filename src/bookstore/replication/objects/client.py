"""The client side between regions' S3 ports (PeerS3): forwarded S3 requests, replica writes, version
reads, bucket lookups; server.py answers them.

They travel through the link simulator to a peer's S3 port under INTERNAL_PREFIX, signed with the
deployment's shared secret (bookstore.kernel.auth), never with SigV4 user credentials: the region
that received a user's request has already checked its signature. Everything a request means is in
its signed target (method, path and query) and body: what travels in headers (the forwarded request's
headers, a replica's version) is bound to the target by its SHA-256 in the query, so nothing covered
by the HMAC can be altered on the way. Object keys travel percent-encoded in the query, never in the
path, because HTTP clients normalise `.` and `..` path segments.

No body is held whole on either side. An object's content (a forwarded PUT's, a replica's) is sent as
it is read from its spool or the store, its SHA-256 declared (X-Bookstore-Content-SHA256) and signed
before it goes, so the receiver checks the signature first and hashes the body as it streams. A
version read from a peer (a copy's source) comes back as a stream that the store reads as it writes.
"""

from __future__ import annotations

import asyncio
import base64
import logging
import ssl
from collections.abc import AsyncIterator, Iterator, Mapping, Sequence
from urllib.parse import quote, urlencode

import httpx
import orjson

from bookstore.kernel.auth import CONTENT_HEADER, PeerAuth
from bookstore.kernel.link_faults import LinkFaults
from bookstore.objectstore.bodies import READ_BYTES, Streamed
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.peer import Forwarded, PeerRefused, PeerUnavailable
from bookstore.objectstore.port import Bucket, ObjectVersion, Part, Replica, Seal
from bookstore.ports import Clock
from bookstore.replication.objects.wire import (
    BATCH_MAX_BYTES,
    BATCH_PATH,
    BUCKETS_PATH,
    CUSTOMER_KEY_HEADER,
    FORWARD_PATH,
    FORWARDED_HEADERS,
    OBJECTS_PATH,
    PING_PATH,
    VERSION_HEADER,
    decode_fields,
    decode_results,
    digest,
    encode_batch,
    encode_fields,
    replica_fields,
    version_from_fields,
)

log = logging.getLogger("bookstore.replication.objects")

# How long an idle connection to a peer is kept: below the region server's keep-alive timeout.
KEEPALIVE_S = 55.0
# Connections to one peer for replication's copies (batches, big versions one at a time) and pings.
REPLICA_CONNECTIONS = 8
# A forwarded response or a version read up to this size is read whole (one write back); larger ones stream.
_BUFFERED_RESPONSE = 1024 * 1024
# How long a thread storing a peer's answer waits for its next piece before giving up on it.
_PIECE_WAIT_S = 120.0
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
        verify: ssl.SSLContext | bool = True,
        links: LinkFaults | None = None,
    ) -> None:
        """`verify`: with TLS between hosts, the deployment's CA (runtime.tls); httpx's default otherwise.
        `links`: the region's links made faulty on purpose (kernel.link_faults), kept by the signer."""
        self.region = region
        self.base_url = base_url
        self.me = me
        self.timeout_s = timeout_s
        # False once the peer has answered that it takes no batches of replicas (put_replicas).
        self._batches = True
        auth = PeerAuth(secret, me, clock, destination=region, links=links)
        self._client = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout_s, connect=min(3.0, timeout_s)),
            # Connections through the link are costly (a round trip to open), so idle ones are kept a
            # while, though dropped before the peer's server closes them (region.process: after 65 s), so
            # a request never goes out on a connection the far end is closing.
            limits=httpx.Limits(
                max_connections=64, max_keepalive_connections=32, keepalive_expiry=KEEPALIVE_S
            ),
            transport=transport,
            verify=verify,
        )
        # Replication's copies and pings have a pool of their own, so that a burst of copies never makes a
        # user's forwarded request wait for a connection. It is small: small versions travel many to a
        # request (put_replicas), and httpcore scans every pooled connection on each request and each
        # response's close, which cost more than the copies themselves with 64 of them.
        self._replicas = httpx.AsyncClient(
            base_url=base_url,
            auth=auth,
            timeout=httpx.Timeout(timeout_s, connect=min(3.0, timeout_s)),
            limits=httpx.Limits(
                max_connections=REPLICA_CONNECTIONS,
                max_keepalive_connections=REPLICA_CONNECTIONS,
                keepalive_expiry=KEEPALIVE_S,
            ),
            transport=transport,
            verify=verify,
        )

    async def aclose(self) -> None:
        await self._client.aclose()
        await self._replicas.aclose()

    async def forward(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        trailers: Mapping[str, str],
        body: bytes | Streamed,
    ) -> Forwarded:
        """Send a checked S3 request (`target` = raw path and query as the client sent them) to the peer.

        Its headers go without hop or signature headers (`forwardable`). A Streamed body (an object's
        spooled content) is sent as it is read, never held whole.
        """
        encoded = encode_fields(forwardable(headers, trailers))
        query = urlencode({"target": target, "headers": digest(encoded)}, quote_via=quote)
        content, sent_headers, size = await _outgoing(body)
        request = self._client.build_request(
            method,
            f"{FORWARD_PATH}?{query}",
            content=content,
            headers={FORWARDED_HEADERS: encoded, **sent_headers},
            timeout=self._timeout(size),
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

    async def put_replica(
        self,
        version: ObjectVersion,
        body: bytes | Streamed,
        parts: Sequence[Part] = (),
        seal: Seal | None = None,
    ) -> None:
        """Write `version` (with `body`, sent as it is read when Streamed, the `parts` it was completed
        from, and an SSE-C version's `seal`, its body then sealed) into the peer's store as a replica;
        idempotent.

        Raises PeerUnavailable when the peer does not answer, PeerRefused when it refuses.
        """
        encoded = encode_fields(replica_fields(version, parts, seal))
        query = urlencode({"version": digest(encoded)}, quote_via=quote)
        content, sent_headers, size = await _outgoing(body)
        request = self._replicas.build_request(
            "PUT",
            f"{OBJECTS_PATH}?{query}",
            content=content,
            headers={VERSION_HEADER: encoded, **sent_headers},
            timeout=self._timeout(size, copy=True),
        )
        response = await self._send(request, client=self._replicas)
        if response.status_code != 200:
            raise _refusal(self.region, response)

    async def put_replicas(self, replicas: Sequence[Replica]) -> list[PeerRefused | None]:
        """Write small versions (each with its whole content, and its parts and seal as put_replica sends
        them) into the peer's store in one request; per replica, in order, None once written or the
        PeerRefused that refused it alone. Idempotent.

        Raises PeerUnavailable when the peer does not answer, PeerRefused when it refuses the whole batch.
        A region without the batch endpoint (it answers 405) gets them one per request from then on.
        """
        if not self._batches:
            return await self._one_by_one(replicas)
        body = encode_batch(replicas)
        if len(body) > BATCH_MAX_BYTES and len(replicas) > 1:
            # Versions with much metadata: more than the peer takes in one batch.
            half = len(replicas) // 2
            return [*await self.put_replicas(replicas[:half]), *await self.put_replicas(replicas[half:])]
        request = self._replicas.build_request(
            "POST", BATCH_PATH, content=body, timeout=self._timeout(len(body), copy=True)
        )
        response = await self._send(request, client=self._replicas)
        if response.status_code == 405:
            # A region of an earlier release, without batches: its versions go one per request.
            log.info("%s takes no batches of replicas; sending them one by one", self.region)
            self._batches = False
            return await self._one_by_one(replicas)
        if response.status_code != 200:
            raise _refusal(self.region, response)
        try:
            results = decode_results(response.content, len(replicas))
        except ValueError as exc:
            raise PeerUnavailable(f"{self.region} answered a batch of replicas with {exc}") from exc
        return [
            None
            if r["status"] == 200
            else PeerRefused(
                str(r.get("message") or f"{self.region} answered {r['status']}"),
                r["status"],
                str(r.get("code") or "InternalError"),
            )
            for r in results
        ]

    async def _one_by_one(self, replicas: Sequence[Replica]) -> list[PeerRefused | None]:
        async def one(replica: Replica) -> PeerRefused | None:
            try:
                await self.put_replica(replica.version, replica.body, replica.parts, replica.seal)
            except PeerRefused as exc:
                return exc
            return None

        return list(await asyncio.gather(*(one(r) for r in replicas)))

    async def get_version(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        byte_range: str | None = None,
        customer_key: CustomerKey | None = None,
    ) -> tuple[ObjectVersion, bytes | Incoming]:
        """A version of an object in a bucket the peer owns, and its bytes (or the `bytes=` range of them);
        an SSE-C version's with its `customer_key` (sent over the signed link for this read only).

        Up to a MiB the bytes come whole; beyond, as an Incoming stream the caller must `aclose`.
        """
        fields = {"bucket": bucket, "key": key}
        if version_id:
            fields["versionId"] = version_id
        if byte_range:
            fields["range"] = byte_range
        headers = {}
        if customer_key is not None:
            # In a header, not the query (which logs may keep); its digest in the signed query binds it.
            encoded = encode_fields(
                {"key": base64.b64encode(customer_key.key).decode("ascii"), "md5": customer_key.md5}
            )
            headers[CUSTOMER_KEY_HEADER] = encoded
            fields["sseKey"] = digest(encoded)
        response = await self._send(
            self._client.build_request(
                "GET", f"{OBJECTS_PATH}?{urlencode(fields, quote_via=quote)}", headers=headers
            ),
            stream=True,
        )
        try:
            if response.status_code not in (200, 206):
                await response.aread()
                raise _refusal(self.region, response)
            try:
                version = version_from_fields(decode_fields(response.headers[VERSION_HEADER]))
                length = int(response.headers["content-length"])
            except (KeyError, ValueError) as exc:
                raise PeerUnavailable(
                    f"{self.region} answered a version read without a version or a length"
                ) from exc
            if length > _BUFFERED_RESPONSE:
                # The caller owns the open response from here.
                return version, Incoming(self.region, response, length, asyncio.get_running_loop())
            data = await response.aread()
        except httpx.HTTPError as exc:
            await response.aclose()
            raise PeerUnavailable(f"{self.region} stopped answering: {_describe(exc)}") from exc
        except BaseException:
            await response.aclose()
            raise
        await response.aclose()
        return version, data

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
        response = await self._send(
            self._replicas.build_request("GET", PING_PATH, timeout=timeout_s), client=self._replicas
        )
        if response.status_code != 200:
            raise _refusal(self.region, response)

    async def _send(
        self, request: httpx.Request, *, stream: bool = False, client: httpx.AsyncClient | None = None
    ) -> httpx.Response:
        try:
            return await (client or self._client).send(request, stream=stream)
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"{self.region} unreachable: {_describe(exc)}") from exc

    def _timeout(self, size: int, *, copy: bool = False) -> httpx.Timeout:
        # Big bodies take longer to cross; a few MiB per second is far below any link's speed. A copy's
        # wait for a pooled connection is not bounded: with replication's small pool a copy may wait
        # behind big ones still crossing, which says nothing of whether the peer answers.
        total = self.timeout_s + size / (4 * 1024 * 1024)
        return httpx.Timeout(total, connect=min(3.0, total), pool=None if copy else total)


class Incoming:
    """A peer's answer body of `size` bytes, read as it arrives by the worker thread that stores it.

    Iterate it in a worker thread only (each piece is awaited on the event loop `loop`); on the loop,
    `aclose` ends the response whether or not it was read to its end.
    """

    def __init__(
        self, region: str, response: httpx.Response, size: int, loop: asyncio.AbstractEventLoop
    ) -> None:
        self.region = region
        self.size = size
        self._response = response
        self._pieces = response.aiter_bytes(READ_BYTES)
        self._loop = loop

    def __iter__(self) -> Iterator[bytes]:
        received = 0
        while True:
            waiting = asyncio.run_coroutine_threadsafe(self._next(), self._loop)
            try:
                # The read has its own timeout; this one frees the thread if the loop itself has stopped.
                piece = waiting.result(timeout=_PIECE_WAIT_S)
            except TimeoutError as exc:
                waiting.cancel()
                raise PeerUnavailable(f"{self.region} sent nothing for {_PIECE_WAIT_S:g} s") from exc
            if piece is None:
                break
            received += len(piece)
            yield piece
        if received != self.size:
            raise PeerUnavailable(f"{self.region} sent {received} bytes of the {self.size} it announced")

    async def _next(self) -> bytes | None:
        try:
            return await self._pieces.__anext__()
        except StopAsyncIteration:
            return None
        except httpx.HTTPError as exc:
            raise PeerUnavailable(f"{self.region} stopped answering: {_describe(exc)}") from exc

    async def aclose(self) -> None:
        await self._response.aclose()


async def _outgoing(body: bytes | Streamed) -> tuple[bytes | AsyncIterator[bytes], dict[str, str], int]:
    """What httpx sends for `body`: the content, the headers it needs, and its size.

    A Streamed body goes with its length and its declared SHA-256 (which PeerAuth signs in place of
    hashing the body), read piece by piece in worker threads as the connection takes them.
    """
    if isinstance(body, bytes):
        return body, {}, len(body)
    sha256 = await asyncio.to_thread(body.sha256)
    headers = {CONTENT_HEADER: sha256, "content-length": str(body.size)}
    return _pieces(body), headers, body.size


async def _pieces(body: Streamed) -> AsyncIterator[bytes]:
    chunks = body.chunks()
    try:
        while (piece := await asyncio.to_thread(next, chunks, None)) is not None:
            yield piece
    finally:
        close = getattr(chunks, "close", None)
        if close is not None:
            await asyncio.to_thread(close)


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
