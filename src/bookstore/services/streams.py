"""Stream consumers: follow a table's change stream from a stored cursor, handing each batch to a handler.

A consumer whose cursor no longer leads on (none stored, the stream trimmed past it, or its store
emptied) rebuilds from a scan of the table, then follows the stream from where it stood before the scan.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import Any

from bookstore.domain.errors import StaleCursor
from bookstore.kernel.clock import SystemClock
from bookstore.ports import ChangeBatch, Clock, Table

log = logging.getLogger(__name__)

Handler = Callable[[ChangeBatch], None]
# Stores the table's whole present state (read by a scan) with the given cursor, in one atomic step.
Rebuild = Callable[[str], None]

# After a failure the loop waits longer each time, up to this, so a broken store is not hammered.
MAX_BACKOFF_S = 2.0


class StreamConsumer:
    """Reads `table.changes` batch by batch and calls `handler(batch)`; the cursor advances only on success.

    The handler owns durability: it stores `batch.cursor` together with its effects (for instance through
    Ranking.put_all), and the consumer starts from that stored cursor. A handler that raises sees the same
    batch again at the next poll, so it must be idempotent; it is never skipped.

    With `rebuild`, a consumer that has no cursor, or meets StaleCursor (the stream was trimmed past its
    cursor, or the handler's store lost what it held), reads the stream's head, then calls
    `rebuild(head)` (which scans the table and stores that state with `head`) and follows from `head`.
    The scan may already hold changes logged after `head`; the handler sees them again, so handling a
    record must leave the state it describes whatever was applied before (set, not add): the result is
    exact. `rebuilds` counts them, for /status and /metrics.
    """

    def __init__(
        self,
        table: Table,
        handler: Handler,
        *,
        cursor: str | None,
        region: str,
        name: str,
        batch_size: int = 100,
        clock: Clock | None = None,
        rebuild: Rebuild | None = None,
    ) -> None:
        self.table = table
        self.handler = handler
        self.rebuild = rebuild
        self.region = region
        self.name = name
        self.batch_size = batch_size
        self.clock: Clock = clock or SystemClock()
        self._cursor = cursor
        # Lag figures for metrics.
        self.last_written_ms: int | None = None
        self.last_poll_ms: int | None = None
        self.records_handled = 0
        self.failures = 0
        self.consecutive_failures = 0
        self._caught_up = False
        # written_ms of the oldest record read but not yet handled (its batch failed).
        self._pending_written_ms: int | None = None
        self.rebuilds = 0
        # Why the last rebuild happened, and when (epoch ms); None before the first.
        self.last_rebuild: tuple[str, int] | None = None
        # Why the next poll must rebuild first; None while the cursor leads on.
        self._stale: str | None = "it has no stored cursor" if cursor is None else None

    @property
    def cursor(self) -> str | None:
        """Where the next poll resumes."""
        return self._cursor

    def poll_once(self) -> int:
        """Read one batch and hand it to the handler; returns how many records were handled (0 on failure)."""
        try:
            if self._stale is not None and self.rebuild is not None:
                self._rebuild(self._stale, self.rebuild)
            batch = self.table.changes(self._cursor, limit=self.batch_size)
            if batch.records:
                self._pending_written_ms = min(r.written_ms for r in batch.records)
                self.handler(batch)
        except StaleCursor as exc:
            if self.rebuild is None:
                return self._failed(exc)
            # Not a failure of the store: the next poll rebuilds from a scan.
            self._stale = f"{type(exc).__name__}: {exc}"
            self._caught_up = False
            return 0
        except Exception as exc:
            return self._failed(exc)
        self._cursor = batch.cursor
        self.last_poll_ms = self.clock.now_ms()
        self.consecutive_failures = 0
        self._pending_written_ms = None
        self._caught_up = len(batch.records) < self.batch_size
        if batch.records:
            self.last_written_ms = batch.records[-1].written_ms
            self.records_handled += len(batch.records)
        return len(batch.records)

    def _rebuild(self, reason: str, rebuild: Rebuild) -> None:
        # The head is read BEFORE the scan: whatever is logged meanwhile is followed after it.
        head = self.table.stream_head()
        rebuild(head)
        self._cursor = head
        self._stale = None
        self.rebuilds += 1
        self.last_rebuild = (reason, self.clock.now_ms())
        log.warning(
            "stream consumer rebuilt from a scan region=%s consumer=%s table=%s reason=%s; following from %r",
            self.region,
            self.name,
            self.table.schema.name,
            reason.replace("\n", " "),
            head,
        )

    def _failed(self, exc: Exception) -> int:
        self.failures += 1
        self.consecutive_failures += 1
        self._caught_up = False
        log.warning(
            "stream consumer failed region=%s consumer=%s table=%s cursor=%r error=%s: %s; retrying",
            self.region,
            self.name,
            self.table.schema.name,
            self._cursor,
            type(exc).__name__,
            str(exc).replace("\n", " "),
        )
        return 0

    def lag_seconds(self, now_ms: int) -> float:
        """How far behind the stream the consumer is: 0 when the last poll caught up with it."""
        if self._caught_up:
            return 0.0
        behind = self._pending_written_ms if self._pending_written_ms is not None else self.last_written_ms
        if behind is None:
            return 0.0
        return max(0.0, (now_ms - behind) / 1000)

    def status(self, now_ms: int) -> dict[str, Any]:
        """Lag, rebuilds and the last rebuild's reason and time, for a region's /status."""
        last = (
            None
            if self.last_rebuild is None
            else {"reason": self.last_rebuild[0], "atMs": self.last_rebuild[1]}
        )
        return {"lagSeconds": self.lag_seconds(now_ms), "rebuilds": self.rebuilds, "lastRebuild": last}

    async def run(self, stop: asyncio.Event, interval_s: float = 0.05) -> None:
        """Poll until `stop` is set: at once while batches come full, else every `interval_s`."""
        while not stop.is_set():
            handled = self.poll_once()
            if self.consecutive_failures:
                delay = min(MAX_BACKOFF_S, interval_s * 2 ** min(self.consecutive_failures, 10))
            elif handled >= self.batch_size:
                # More is waiting; still yield so the rest of the event loop keeps running.
                await asyncio.sleep(0)
                continue
            else:
                delay = interval_s
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), delay)
