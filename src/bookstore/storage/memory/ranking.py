"""MemoryRanking: the Ranking port in dicts, for unit tests; the whole contract except persistence."""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence

from bookstore.domain.errors import StaleCursor
from bookstore.ports import Event
from bookstore.storage.scores import decode_scores, encode_scores


class MemoryRanking:
    """Scores of members and the scores each event holds; every change is made on copies, then swapped in,
    so a refused batch changes nothing and a reader sees the whole old state or the whole new one."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._scores: dict[str, int] = {}
        self._counted: dict[str, str] = {}
        self._cursor: str | None = None

    def put_all(self, events: Sequence[Event], cursor: str) -> int:
        with self._lock:
            if self._cursor is None:
                raise StaleCursor("the ranking holds no cursor: rebuild it from the orders")
            scores, counted = dict(self._scores), dict(self._counted)
            changed = sum(_put(scores, counted, event_id, event_scores) for event_id, event_scores in events)
            self._scores, self._counted, self._cursor = scores, counted, cursor
            return changed

    def rebuild(self, events: Sequence[Event], cursor: str) -> None:
        scores: dict[str, int] = {}
        counted: dict[str, str] = {}
        for event_id, event_scores in events:
            _put(scores, counted, event_id, event_scores)
        with self._lock:
            self._scores, self._counted, self._cursor = scores, counted, cursor

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        if n <= 0:
            return []
        with self._lock:
            ranked = sorted(self._scores.items(), key=lambda pair: (-pair[1], pair[0]))
        return ranked[:n]

    def cursor(self) -> str | None:
        with self._lock:
            return self._cursor


def _put(
    scores: dict[str, int], counted: dict[str, str], event_id: str, event_scores: Mapping[str, int]
) -> bool:
    """Set the event's scores, un-counting those it held; whether anything changed."""
    new = encode_scores(event_id, event_scores)
    old = counted.get(event_id, "")
    if old == new:
        return False
    for member, score in decode_scores(old):
        scores[member] = scores.get(member, 0) - score
    for member, score in decode_scores(new):
        scores[member] = scores.get(member, 0) + score
    for member in {m for m, _ in decode_scores(old)} | {m for m, _ in decode_scores(new)}:
        if scores.get(member, 0) <= 0:
            scores.pop(member, None)
    if new:
        counted[event_id] = new
    else:
        counted.pop(event_id, None)
    return True
