"""The signatures a receiver has already accepted: each signed request between regions is accepted once.

A signature is remembered (by its source region and nonce) until its timestamp leaves the validity
window, after which the window alone refuses it. Memory is bounded: when `capacity` signatures are
remembered, the oldest is forgotten and its timestamp becomes a floor, so every request signed at or
before it is refused too (its sender signs again). Nothing is ever accepted twice, whatever the load.
The record is in memory: a restart forgets it (a request captured in the window before a restart can
be replayed once after it; the replication endpoints are idempotent, so that changes nothing).
"""

from __future__ import annotations

import heapq

from bookstore.domain.errors import Unauthorized

DEFAULT_CAPACITY = 65_536


class SeenSignatures:
    """Refuses a (region, nonce) seen before; remembers each for `window_ms` after its timestamp."""

    def __init__(self, window_ms: int, capacity: int = DEFAULT_CAPACITY) -> None:
        if capacity < 1:
            raise ValueError("the record of accepted signatures needs room for at least one")
        self.window_ms = window_ms
        self.capacity = capacity
        self.floor_ms = -1
        self._seen: set[tuple[str, str]] = set()
        self._by_time: list[tuple[int, str, str]] = []

    def __len__(self) -> int:
        return len(self._seen)

    def accept(self, region: str, nonce: str, timestamp_ms: int, now_ms: int) -> None:
        """Remember this signature, or raise Unauthorized when it was accepted before (a replay)."""
        self._forget_expired(now_ms)
        if (region, nonce) in self._seen:
            raise Unauthorized(
                f"this request from {region} was accepted before (nonce {nonce}): a signed request "
                "is accepted once; sign it again"
            )
        if timestamp_ms <= self.floor_ms:
            raise Unauthorized(
                f"request from {region} signed at {timestamp_ms}, before the oldest signature this "
                "region still remembers (many requests at once); sign it again"
            )
        if len(self._seen) >= self.capacity:
            oldest, old_region, old_nonce = heapq.heappop(self._by_time)
            self._seen.discard((old_region, old_nonce))
            self.floor_ms = max(self.floor_ms, oldest)
            if timestamp_ms <= self.floor_ms:
                raise Unauthorized(
                    f"request from {region} signed at {timestamp_ms}, before the oldest signature "
                    "this region still remembers (many requests at once); sign it again"
                )
        self._seen.add((region, nonce))
        heapq.heappush(self._by_time, (timestamp_ms, region, nonce))

    def _forget_expired(self, now_ms: int) -> None:
        horizon = now_ms - self.window_ms
        while self._by_time and self._by_time[0][0] < horizon:
            _, region, nonce = heapq.heappop(self._by_time)
            self._seen.discard((region, nonce))
