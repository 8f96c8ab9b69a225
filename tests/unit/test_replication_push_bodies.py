"""A push's bodies (wire.push_bodies): each within the byte limit, together every entry in order once."""

from __future__ import annotations

import orjson
from hypothesis import given
from hypothesis import strategies as st

from bookstore.replication.tables.model import LogEntry
from bookstore.replication.tables.wire import entry_json, parse_batch, push_bodies
from bookstore.tables import BOOKS

EU = "eu-west-1"
LIMIT = 2_000


def book(i: int, size: int) -> LogEntry:
    item = {"id": f"b{i}", "name": "x" * size}
    return LogEntry(i + 1, "books", "INSERT", {"id": f"b{i}"}, None, item, 1, EU, (1 << 16, EU), None)


@given(st.lists(st.integers(0, 2 * LIMIT), max_size=40))
def test_bodies_stay_within_the_limit_and_carry_every_entry_that_fits_alone(sizes: list[int]) -> None:
    entries = [book(i, size) for i, size in enumerate(sizes)]
    bodies, too_large = push_bodies(EU, entries, LIMIT)
    assert all(len(body) <= LIMIT for body in bodies)
    sent = [e for body in bodies for e in parse_batch(orjson.loads(body), {"books": BOOKS}, [EU])[1]]
    assert sent == [e for e in entries if e not in too_large]
    # What was kept back could not have gone in a body of its own.
    alone = len(b'{"source":"eu-west-1","entries":[]}')
    assert all(len(orjson.dumps(entry_json(e))) + alone > LIMIT for e in too_large)
