"""Bodies of the S3 API, never held whole in memory: requests' spooled as they arrive, stored ones read.

A request body is read from the ASGI stream, decoded and checked as it arrives, and spooled: up to
SPOOL_BYTES it stays in memory (the pieces as they came), beyond that it goes to an unnamed temporary
file in the staging directory (gone with the process, whatever its end). It is bounded while it
arrives, by the route's limit and by the length the request declares. The store sees it only after
the whole body has arrived and its signature and checksums have checked out.

A body sent on to another region (a forwarded request's, a replica's) is a `Streamed`: its size and
SHA-256 are known before it is sent (the signature between regions covers the hash, checked before
the receiver reads the body), then its pieces are read as they are sent (replication.objects.client.PeerS3).
"""

from __future__ import annotations

import hashlib
import tempfile
import threading
from collections.abc import AsyncIterator, Iterator, Mapping
from pathlib import Path
from typing import IO, Protocol

from bookstore.objectstore.errors import EntityTooLarge, IncompleteBody, MalformedXML
from bookstore.objectstore.port import Objects, ObjectVersion
from bookstore.objectstore.sigv4 import Checksums, PayloadReader

SPOOL_BYTES = 1024 * 1024
READ_BYTES = 1024 * 1024


class Streamed(Protocol):
    """A body sent to another region as it is read: `size` bytes whose hex SHA-256 is `sha256()`.

    Both methods block (they read files): call them in a worker thread. `chunks` starts from the
    beginning at each call; the pieces are at most about a MiB.
    """

    size: int

    def sha256(self) -> str: ...

    def chunks(self) -> Iterator[bytes]: ...


def sha256_of(chunks: Iterator[bytes]) -> str:
    """The hex SHA-256 of the pieces, read one at a time."""
    digest = hashlib.sha256()
    for piece in chunks:
        digest.update(piece)
    return digest.hexdigest()


class Payload:
    """The content of a request that has arrived whole and checked out; `close` frees its spool.

    Up to SPOOL_BYTES the content is the pieces it arrived in (a small PUT's is one, taken as it is);
    beyond, a file in the staging directory.
    """

    def __init__(
        self,
        spool: list[bytes] | IO[bytes],
        size: int,
        trailers: dict[str, str],
        verified: dict[str, str],
    ) -> None:
        self._spool = spool
        self.size = size
        # Trailing headers of an aws-chunked body, and the checksums verified (echoed in the answer).
        self.trailers = trailers
        self.verified = verified

    def chunks(self) -> Iterator[bytes]:
        """The content from its start, in pieces of at most READ_BYTES."""
        spool = self._spool
        if isinstance(spool, list):
            yield from spool  # at most SPOOL_BYTES in all, which is READ_BYTES
            return
        spool.seek(0)
        while piece := spool.read(READ_BYTES):
            yield piece

    def sha256(self) -> str:
        """The content's hex SHA-256 (it is read again from the spool: only a body sent on needs it)."""
        return sha256_of(self.chunks())

    def read(self, limit: int) -> bytes:
        """The content whole, when it is at most `limit` bytes (a document); else MalformedXML."""
        if self.size > limit:
            raise MalformedXML(f"The document you provided is too large: at most {limit} bytes")
        spool = self._spool
        if isinstance(spool, list):
            return b"".join(spool)  # one piece: that piece itself, no copy
        spool.seek(0)
        return spool.read()

    def close(self) -> None:
        if not isinstance(self._spool, list):
            self._spool.close()


class Stored:
    """A version's content in this region's store, as a Streamed: read from the store at each pass."""

    def __init__(self, store: Objects, version: ObjectVersion) -> None:
        self.store = store
        self.version = version
        self.size = version.size
        self._sha256: str | None = None
        # Copies of one version to several regions run at once: its hash is computed by one of them.
        self._lock = threading.Lock()

    def sha256(self) -> str:
        with self._lock:
            if self._sha256 is None:
                self._sha256 = sha256_of(self.chunks())
            return self._sha256

    def chunks(self) -> Iterator[bytes]:
        v = self.version
        body = self.store.get_object(v.bucket, v.key, version_id=v.version_id).body
        try:
            yield from body
        finally:
            # The store's reader holds its file open until it is closed or exhausted.
            close = getattr(body, "close", None)
            if close is not None:
                close()


async def receive(
    stream: AsyncIterator[bytes],
    reader: PayloadReader,
    headers: Mapping[str, str],
    *,
    limit: int,
    staging: Path | None,
) -> Payload:
    """Read a request body from `stream` through `reader` (signature, aws-chunked) into a spool.

    Raises EntityTooLarge as soon as the content exceeds `limit` or what Content-Length (or, for
    aws-chunked, x-amz-decoded-content-length) declares, IncompleteBody when it falls short, and the
    reader's and the checksums' errors once the body has ended.
    """
    declared = _declared_length(
        headers, "x-amz-decoded-content-length" if reader.decodes else "content-length"
    )
    if declared is not None and declared > limit:
        raise EntityTooLarge(f"Your proposed upload exceeds the maximum allowed size ({limit} bytes)")
    bound = limit if declared is None else declared
    checksums = Checksums(headers)
    pieces: list[bytes] = []
    spool: IO[bytes] | None = None
    size = 0
    try:
        async for data in stream:
            content = reader.feed(data)
            if not content:
                continue
            size += len(content)
            if size > bound:
                if declared is None or size > limit:
                    raise EntityTooLarge(
                        f"Your proposed upload exceeds the maximum allowed size ({limit} bytes)"
                    )
                raise IncompleteBody(f"The body holds more than the {declared} bytes its request declares")
            checksums.update(content)
            if spool is None and size <= SPOOL_BYTES:
                pieces.append(content)
                continue
            if spool is None:
                spool = tempfile.TemporaryFile(dir=staging)  # noqa: SIM115 (the Payload closes it)
                spool.writelines(pieces)
                pieces = []
            spool.write(content)
        trailers = reader.finish()
        if declared is not None and size != declared:
            raise IncompleteBody(f"The body holds {size} bytes; its request declares {declared}")
        verified = checksums.verify({**headers, **trailers})
    except BaseException:
        if spool is not None:
            spool.close()
        raise
    return Payload(pieces if spool is None else spool, size, trailers, verified)


def _declared_length(headers: Mapping[str, str], name: str) -> int | None:
    """The content length the request declares in header `name`, if it does."""
    value = headers.get(name)
    if value is None:
        return None
    value = value.strip()
    if not value.isdigit() or not value.isascii():
        raise IncompleteBody(f"{name} must be a number of bytes, not {value[:20]!r}")
    return int(value)
