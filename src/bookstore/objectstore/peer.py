"""What the S3 API and the bucket namespace need from another region's S3 port: the RegionPeer port.

The S3 API of a region forwards requests for another region's buckets, reads copy sources from it and
asks it which buckets it holds; how those requests travel (signed by the deployment's secret, under
INTERNAL_PREFIX) is replication.objects' business (client and server). This module holds only the port,
its answer, its errors and the path prefix the S3 API keeps for it.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Iterator, Mapping
from dataclasses import dataclass
from typing import Protocol

from bookstore.domain.errors import Unavailable
from bookstore.objectstore.bodies import Streamed
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.errors import S3Error
from bookstore.objectstore.port import Bucket, ObjectVersion

# Paths under this prefix are never S3 requests: they are the endpoints between regions.
INTERNAL_PREFIX = "/_replication/"


class PeerUnavailable(Unavailable):
    """A peer region did not answer (link cut, region down, timeout)."""


class PeerRefused(S3Error):
    """A peer region answered with an S3 error; it carries that error's code and status on."""

    def __init__(self, message: str, status: int, code: str) -> None:
        super().__init__(message)
        self.status = status
        self.code = code


@dataclass
class Forwarded:
    """A peer's answer to a forwarded request: status, headers, and the body (whole or streamed)."""

    status: int
    headers: list[tuple[str, str]]
    body: bytes | None
    stream: AsyncIterator[bytes] | None = None


class PeerBody(Protocol):
    """A version's bytes streamed from a peer: iterated in a worker thread, closed on the event loop."""

    size: int

    def __iter__(self) -> Iterator[bytes]: ...

    async def aclose(self) -> None: ...


class RegionPeer(Protocol):
    """Another region's S3 port as this region reaches it; raises PeerUnavailable or PeerRefused."""

    region: str

    async def forward(
        self,
        method: str,
        target: str,
        headers: Mapping[str, str],
        trailers: Mapping[str, str],
        body: bytes | Streamed,
    ) -> Forwarded:
        """Send a checked S3 request (`target` = raw path and query as the client sent them)."""
        ...

    async def get_version(
        self,
        bucket: str,
        key: str,
        version_id: str | None,
        byte_range: str | None = None,
        customer_key: CustomerKey | None = None,
    ) -> tuple[ObjectVersion, bytes | PeerBody]:
        """A version in a bucket the peer owns and its bytes (or the `bytes=` range of them); an SSE-C
        version's with its `customer_key`, which the peer uses for this read only and never stores."""
        ...

    async def bucket(self, name: str) -> Bucket | None:
        """The bucket `name` when the peer owns it, else None."""
        ...

    async def aclose(self) -> None: ...
