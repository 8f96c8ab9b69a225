"""What a primary's follow streams have sent, so that a write is acknowledged only once it has left.

A record the primary acknowledged but had not yet written to a follower's connection is lost to the
lineage if the primary's process dies then (kill -9): the promoted replica never had it, and the old
primary can only keep it aside as diverged when it rejoins. Once written to the connection, the kernel
delivers it even after the process is gone. So a write waits, in its own thread, until every stream that
was caught up when it committed has sent it; a stream that lags behind (catching up, or slow) does not
hold writes up, and none waits longer than a bound.
"""

from __future__ import annotations

import itertools
import threading
import time
from typing import Final

# How long a write waits for the streams before it is acknowledged anyway (as before: asynchronously).
SEND_WAIT_S: Final = 1.0
# A stream at most this many records behind a write counts as caught up (writers in several threads
# commit one after another; a stream one line behind sends the write with its next line or two).
CAUGHT_UP_RECORDS: Final = 500


class Shipping:
    """Per open follow stream, the highest lsn it has sent; writers wait on it from their own threads."""

    def __init__(self, wait_s: float = SEND_WAIT_S) -> None:
        self.wait_s = wait_s
        self._sent: dict[int, int] = {}
        self._ids = itertools.count(1)
        self._changed = threading.Condition()
        # The thread that runs the streams: a write made there cannot wait for them.
        self.loop_thread: int | None = None

    def open(self, position: int) -> int:
        """A stream that will send the records after `position`; returns its id."""
        with self._changed:
            stream = next(self._ids)
            self._sent[stream] = position
            return stream

    def sent(self, stream: int, lsn: int) -> None:
        """The stream has written every record up to `lsn` to its connection (or there were no more)."""
        with self._changed:
            if stream in self._sent and lsn > self._sent[stream]:
                self._sent[stream] = lsn
                self._changed.notify_all()

    def close(self, stream: int) -> None:
        with self._changed:
            self._sent.pop(stream, None)
            self._changed.notify_all()

    def wait(self, first: int, last: int) -> bool:
        """Until every stream caught up with `first` has sent `last`, or gone; False
        when the bound passed first (or when called on the streams' own thread, which cannot wait)."""
        if threading.get_ident() == self.loop_thread:
            return False
        deadline = time.monotonic() + self.wait_s
        with self._changed:
            waited = [s for s, lsn in self._sent.items() if lsn >= first - 1 - CAUGHT_UP_RECORDS]

            def done() -> bool:
                return all(self._sent.get(s, last) >= last for s in waited)

            return self._changed.wait_for(done, max(0.0, deadline - time.monotonic()))
