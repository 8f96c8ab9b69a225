"""What every S3 handler works with: the region's store, its bucket namespace and the calls between regions.

The handlers (buckets, bucket_configs, objects, multipart) are functions of an S3Context and a Call;
the context decides where a store call runs (event loop or worker thread), and reaches the region that
owns a bucket (a forwarded request, a copy's source) through the cluster's peers.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from starlette.concurrency import run_in_threadpool
from starlette.responses import Response, StreamingResponse

from bookstore.objectstore import bodies
from bookstore.objectstore import headers as rules
from bookstore.objectstore.bodies import Payload
from bookstore.objectstore.completed import CompletedUploads
from bookstore.objectstore.conditional import WriteConditions
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.namespace import Cluster
from bookstore.objectstore.peer import Forwarded, PeerUnavailable, RegionPeer
from bookstore.objectstore.port import ObjectContent, ObjectStore
from bookstore.objectstore.request import Call
from bookstore.objectstore.sigv4 import SigV4
from bookstore.ports import Clock

T = TypeVar("T")


class S3Context:
    """One region's S3 API state: store, region, cluster (None: a single region), spool directory, clock."""

    def __init__(
        self,
        store: ObjectStore,
        region: str,
        clock: Clock | None = None,
        cluster: Cluster[Any] | None = None,
        staging: Path | None = None,
    ) -> None:
        self.store = store
        self.region = region
        self.cluster: Cluster[RegionPeer] | None = cluster
        self.staging = staging
        self.now_ms: Callable[[], int] = (
            (lambda: time.time_ns() // 1_000_000) if clock is None else clock.now_ms
        )
        self.completed = CompletedUploads()
        # The signature checker (S3Api's): POST object checks a form's policy signature with its keys.
        self.signer: SigV4 | None = None
        self.conditions = WriteConditions()

    async def run(self, function: Callable[..., T], *args: Any, big: bool = False, **kwargs: Any) -> T:
        """Call the store: on the event loop when it is quick (local, small), else in a worker thread."""
        if self.store.runs_inline and not big:
            return function(*args, **kwargs)
        return await run_in_threadpool(function, *args, **kwargs)

    async def forward(self, call: Call, region: str) -> Response:
        """Send a checked request to the region that owns its bucket, and relay that region's answer."""
        assert self.cluster is not None
        peer = self.cluster.peers.get(region)
        if peer is None:
            raise PeerUnavailable(f"bucket {call.bucket!r} lives in {region}, which this region cannot reach")
        # An object's content is streamed from its spool, signed by the hash it declares; one that the
        # spool holds in memory anyway goes whole (no worker thread to hash it and read its pieces).
        body: bytes | Payload = call.body
        if call.payload is not None:
            small = call.payload.size <= bodies.SPOOL_BYTES
            body = call.payload.read(bodies.SPOOL_BYTES) if small else call.payload
        answer = await peer.forward(call.method, call.target, call.headers, call.trailers, body)
        return _relayed(answer)

    async def source(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        byte_range: str | None,
        *,
        customer_key: CustomerKey | None = None,
    ) -> ObjectContent:
        """A copy source and its bytes, read from this region's store or from the region that owns it.

        Its body may stream (from a file, from the peer): store it in a worker thread, then `release` it.
        An SSE-C source (`customer_key`) of another region is read there with the key, sent over the
        signed link for that read (as a forwarded request's), never stored.
        """
        owner = None if self.cluster is None else await self.cluster.owner(bucket)
        if self.cluster is None or owner is None or owner.region == self.region:
            wanted = rules.byte_range(byte_range) if byte_range else None
            return await run_in_threadpool(
                self.store.get_object,
                bucket,
                key,
                version_id=version_id,
                byte_range=wanted,
                customer_key=customer_key,
            )
        peer = self.cluster.peers.get(owner.region)
        if peer is None:
            raise PeerUnavailable(
                f"bucket {bucket!r} lives in {owner.region}, which this region cannot reach"
            )
        version, data = await peer.get_version(bucket, key, version_id, byte_range, customer_key)
        first = rules.first_byte(byte_range, version.size)
        if isinstance(data, bytes):
            return ObjectContent(version, (data,), first, first + len(data) - 1, byte_range is not None)
        return ObjectContent(version, data, first, first + data.size - 1, byte_range is not None)


async def release(content: ObjectContent) -> None:
    """End a copy source's stream, read to its end or not: a peer's response, a file of the store."""
    body = content.body
    aclose = getattr(body, "aclose", None)
    if aclose is not None:
        await aclose()
        return
    close = getattr(body, "close", None)
    if close is not None:
        close()


def xml(body: bytes, headers: Mapping[str, str] | None = None) -> Response:
    """A 200 answer holding an S3 XML document."""
    return Response(body, status_code=200, headers=dict(headers or {}), media_type="application/xml")


# Set by the S3 app on every answer: a relayed answer goes out under this region's request id.
_OWN_HEADERS = frozenset([b"x-amz-request-id", b"x-amz-id-2"])


def _relayed(answer: Forwarded) -> Response:
    """The answer of the region a request was forwarded to, as this region's answer."""
    raw = [(name.lower().encode("latin-1"), value.encode("latin-1")) for name, value in answer.headers]
    raw = [header for header in raw if header[0] not in _OWN_HEADERS]
    response: Response
    if answer.stream is not None:
        response = StreamingResponse(answer.stream, status_code=answer.status)
    else:
        response = Response(answer.body or b"", status_code=answer.status)
    response.raw_headers = raw
    return response
