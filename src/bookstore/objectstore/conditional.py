"""Conditional writes: If-Match and If-None-Match: * on PutObject and CompleteMultipartUpload, as S3."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from contextlib import asynccontextmanager
from typing import TypeVar

from bookstore.objectstore.errors import (
    ConditionalRequestConflict,
    NoSuchKey,
    NotImplementedS3,
    PreconditionFailed,
)
from bookstore.objectstore.port import ObjectVersion

T = TypeVar("T")

_FAILED = "At least one of the pre-conditions you specified did not hold"


def etag_matches(header: str, etag: str) -> bool:
    """Whether an If-Match value (a list of ETags, quoted or not, or *) names `etag`."""
    return any(t.strip() in ("*", f'"{etag}"', etag) for t in header.split(","))


def check(current: ObjectVersion | None, headers: Mapping[str, str]) -> None:
    """Refuse a write whose If-Match / If-None-Match does not hold for the key's `current` version.

    If-None-Match: * asks that the key have no current object (412 otherwise); If-Match asks that its
    current object have one of the ETags (412), and answers 404 NoSuchKey when there is none, as S3 does.
    """
    if_match, if_none_match = headers.get("if-match"), headers.get("if-none-match")
    if if_none_match is not None and current is not None:
        raise PreconditionFailed(_FAILED)
    if if_match is not None:
        if current is None:
            raise NoSuchKey("The specified key does not exist.")
        if not etag_matches(if_match, current.etag):
            raise PreconditionFailed(_FAILED)


def conditional(headers: Mapping[str, str]) -> bool:
    """Whether a write is conditional; NotImplemented for an If-None-Match other than * (as S3)."""
    if_none_match = headers.get("if-none-match")
    if if_none_match is not None and if_none_match.strip() != "*":
        raise NotImplementedS3("If-None-Match on a write only takes the value *")
    return if_none_match is not None or "if-match" in headers


class WriteConditions:
    """Serializes the conditional writes of one key in this region (the one that owns its bucket).

    The check and the write must not interleave with another conditional write of the same key, or two
    writers holding If-None-Match: * could both succeed (locking code relies on exactly one winning).
    A second one arriving while the first is in flight answers 409 ConditionalRequestConflict, as S3
    does, and the client retries; unconditional writes are not held up.
    """

    def __init__(self) -> None:
        self._busy: set[tuple[str, str]] = set()

    @asynccontextmanager
    async def held(self, bucket: str, key: str) -> AsyncIterator[None]:
        name = (bucket, key)
        if name in self._busy:
            raise ConditionalRequestConflict(
                "A conflicting conditional operation is currently in progress against this resource. "
                "Please try again."
            )
        self._busy.add(name)
        try:
            yield
        finally:
            self._busy.discard(name)

    async def guarded(
        self,
        bucket: str,
        key: str,
        headers: Mapping[str, str],
        current: Callable[[], Awaitable[ObjectVersion | None]],
        write: Callable[[], Awaitable[T]],
    ) -> T:
        """`write()`: when it is conditional, with the key held and its `current` version checked first.

        Most writes name no condition: they go straight on, with no context manager built for them."""
        if not conditional(headers):
            return await write()
        async with self.held(bucket, key):
            check(await current(), headers)
            return await write()
