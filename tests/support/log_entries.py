"""Log entries for replication unit tests: one cart row per sequence number, from a chosen origin."""

from __future__ import annotations

from bookstore.replication.tables.model import LogEntry


def cart_entry(seq: int, origin: str) -> LogEntry:
    """The MODIFY of cart row b<seq> of customer c1, written by `origin` at a time that grows with seq."""
    return LogEntry(
        seq=seq,
        table="carts",
        kind="MODIFY",
        key={"customerId": "c1", "bookId": f"b{seq}"},
        new={"customerId": "c1", "bookId": f"b{seq}", "quantity": 1},
        old=None,
        origin=origin,
        version=(1_765_000_000_000 + seq, origin),
        previous=None,
        written_ms=1_765_000_000_000 + seq,
    )
