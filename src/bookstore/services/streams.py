"""Stream consumers: follow a table's change stream from a stored cursor, handing each batch to a handler."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable

from bookstore.ports import ChangeBatch, Clock, Table
from bookstore.replication.clock import SystemClock

log = logging.getLogger(__name__)

Handler = Callable[[ChangeBatch], None]

# After a failure the loop waits longer each time, up to this, so a broken store is not hammered.
MAX_BACKOFF_S = 2.0


class StreamConsumer:
    """Reads `table.changes` batch by batch and calls `handler(batch)`; the cursor advances only on success.

    The handler owns durability: it stores `batch.cursor` together with its effects (for instance through
    Ranking.add), and the consumer starts from that stored cursor. A handler that raises sees the same
    batch again at the next poll, so it must be idempotent; it is never skipped.
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
    ) -> None:
        self.table = table
        self.handler = handler
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

    @property
    def cursor(self) -> str | None:
        """Where the next poll resumes."""
        return self._cursor

    def poll_once(self) -> int:
        """Read one batch and hand it to the handler; returns how many records were handled (0 on failure)."""
        try:
            batch = self.table.changes(self._cursor, limit=self.batch_size)
            if batch.records:
                self._pending_written_ms = min(r.written_ms for r in batch.records)
                self.handler(batch)
        except Exception as exc:
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
        self._cursor = batch.cursor
        self.last_poll_ms = self.clock.now_ms()
        self.consecutive_failures = 0
        self._pending_written_ms = None
        self._caught_up = len(batch.records) < self.batch_size
        if batch.records:
            self.last_written_ms = batch.records[-1].written_ms
            self.records_handled += len(batch.records)
        return len(batch.records)

    def lag_seconds(self, now_ms: int) -> float:
        """How far behind the stream the consumer is: 0 when the last poll caught up with it."""
        if self._caught_up:
            return 0.0
        behind = self._pending_written_ms if self._pending_written_ms is not None else self.last_written_ms
        if behind is None:
            return 0.0
        return max(0.0, (now_ms - behind) / 1000)

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
