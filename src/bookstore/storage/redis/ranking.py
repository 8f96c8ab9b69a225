"""The Redis Ranking adapter: the original's sorted set `TopBooks:AllTime`, events counted once, a cursor."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis

from bookstore.domain.errors import StorageError

# KEYS: scores (sorted set), counted event ids (set), cursor (string).
# ARGV: event id, "1" when a cursor is given else "0", the cursor, then member/increment pairs.
# One script so the dedup check, the increments and the cursor commit together or not at all. Redis does
# not roll a script back when a command fails half-way, so everything that could fail is checked first.
_ADD = """
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
local zt, st = kind(KEYS[1]), kind(KEYS[2])
if (zt ~= 'zset' and zt ~= 'none') or (st ~= 'set' and st ~= 'none') then
  return redis.error_reply('WRONGTYPE ranking keys ' .. KEYS[1] .. ' / ' .. KEYS[2] .. ' hold other data')
end
for i = 5, #ARGV, 2 do
  if tonumber(ARGV[i]) == nil then
    return redis.error_reply('ERR increment of ' .. ARGV[i - 1] .. ' is not a number')
  end
end
if redis.call('SISMEMBER', KEYS[2], ARGV[1]) == 1 then
  return 0
end
redis.call('SADD', KEYS[2], ARGV[1])
for i = 4, #ARGV, 2 do
  redis.call('ZINCRBY', KEYS[1], ARGV[i + 1], ARGV[i])
end
if ARGV[2] == '1' then
  redis.call('SET', KEYS[3], ARGV[3])
end
return 1
"""

# ZREVRANGE orders equal scores by member descending, so the head can hold the wrong members of the tie
# group at the n-th place. Return the head and, separately, that whole boundary group in member order
# (ZRANGEBYSCORE on one score is ascending by member), read in the same atomic step.
_TOP = """
local head = redis.call('ZREVRANGE', KEYS[1], 0, tonumber(ARGV[1]) - 1, 'WITHSCORES')
if #head == 0 then
  return {head, {}}
end
local last = head[#head]
return {head, redis.call('ZRANGEBYSCORE', KEYS[1], last, last, 'LIMIT', 0, tonumber(ARGV[1]))}
"""


class RedisRanking:
    """Best sellers in a Redis sorted set `{namespace}TopBooks:AllTime` (ZINCRBY quantity bookId)."""

    def __init__(self, client: redis.Redis, namespace: str = "") -> None:
        self.client = client
        self.namespace = namespace
        self.scores_key = f"{namespace}TopBooks:AllTime"
        self.events_key = f"{namespace}TopBooks:Events"
        self.cursor_key = f"{namespace}TopBooks:Cursor"
        self._keys = [self.scores_key, self.events_key, self.cursor_key]
        self._add = client.register_script(_ADD)
        self._top = client.register_script(_TOP)

    def add(self, event_id: str, scores: Mapping[str, int], cursor: str | None = None) -> bool:
        try:
            added = self._add(keys=self._keys, args=_add_args(event_id, scores, cursor))
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: add of event {event_id!r} failed: {exc}") from exc
        return bool(added)

    def add_all(self, events: Sequence[tuple[str, Mapping[str, int]]], cursor: str) -> int:
        # One round trip for the events; the cursor after them, and only when every one of them counted.
        pipe = self.client.pipeline(transaction=False)
        for event_id, scores in events:
            self._add(keys=self._keys, args=_add_args(event_id, scores, None), client=pipe)
        try:
            added = pipe.execute() if events else []
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: add of {len(events)} events failed: {exc}") from exc
        self.set_cursor(cursor)
        return sum(1 for a in added if a)

    def top(self, n: int = 20) -> list[tuple[str, int]]:
        if n <= 0:
            return []
        try:
            head, boundary = self._top(keys=[self.scores_key], args=[n])
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: top failed: {exc}") from exc
        pairs = [(_text(head[i]), _score(head[i + 1])) for i in range(0, len(head), 2)]
        if not pairs:
            return []
        last = pairs[-1][1]
        above = sorted((p for p in pairs if p[1] > last), key=lambda p: (-p[1], p[0]))
        tied = [(_text(member), last) for member in boundary]
        return (above + tied)[:n]

    def cursor(self) -> str | None:
        try:
            value = self.client.get(self.cursor_key)
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: reading the cursor failed: {exc}") from exc
        return None if value is None else _text(value)

    def set_cursor(self, cursor: str) -> None:
        try:
            self.client.set(self.cursor_key, cursor)
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: storing the cursor failed: {exc}") from exc


def _add_args(event_id: str, scores: Mapping[str, int], cursor: str | None) -> list[str | int]:
    """ARGV of the _ADD script."""
    args: list[str | int] = [event_id, "0" if cursor is None else "1", cursor or ""]
    for member, score in scores.items():
        args += [member, int(score)]
    return args


def _text(value: Any) -> str:
    # The client may or may not decode responses; both are accepted.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _score(value: Any) -> int:
    return int(float(_text(value)))
