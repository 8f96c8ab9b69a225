"""The Redis Ranking adapter: the original's sorted set `TopBooks:AllTime`, each event's scores, a cursor.

Every key of one ranking carries the same hash tag (`{<namespace>TopBooks}:AllTime`...), so the scripts
that touch several of them at once also run on a Redis Cluster (ElastiCache in cluster mode), where keys
of different slots in one script fail with CROSSSLOT.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import redis
import redis.cluster

from bookstore.domain.errors import StaleCursor, StorageError
from bookstore.ports import Event
from bookstore.storage.scores import encode_scores

# Events handed to Redis per script call or pipeline while rebuilding.
REBUILD_CHUNK = 500

# Shared by the scripts: the ranking's keys hold the types it writes, or nothing.
_CHECK_TYPES = """
local function kind(key)
  return redis.call('TYPE', key)['ok']
end
local zt, ht = kind(KEYS[1]), kind(KEYS[2])
if (zt ~= 'zset' and zt ~= 'none') or (ht ~= 'hash' and ht ~= 'none') then
  return redis.error_reply('WRONGTYPE ranking keys ' .. KEYS[1] .. ' / ' .. KEYS[2] .. ' hold other data')
end
"""

# KEYS: scores (sorted set), each event's scores (hash: event id -> encode_scores text), cursor (string).
# ARGV: the cursor, then event id / scores text pairs ("" un-counts the event).
# One script, so the events and the cursor commit together or not at all. Redis does not roll a script
# back when a command fails half-way, so everything that could fail is checked before the first write.
# No cursor means the ranking was emptied (Redis restarted without persistence) or never built: it
# refuses, and its consumer rebuilds it from the orders table.
_PUT_ALL = (
    _CHECK_TYPES
    + """
if redis.call('EXISTS', KEYS[3]) == 0 then
  return redis.error_reply('STALE ranking ' .. KEYS[3] .. ' holds no cursor: rebuild it')
end
local decoded = {}
for i = 2, #ARGV, 2 do
  if ARGV[i + 1] ~= '' then
    local ok, pairs = pcall(cjson.decode, ARGV[i + 1])
    if not ok or type(pairs) ~= 'table' then
      return redis.error_reply('ERR scores of ' .. ARGV[i] .. ' are not a list of pairs')
    end
    for _, pair in ipairs(pairs) do
      if type(pair) ~= 'table' or type(pair[1]) ~= 'string' or type(pair[2]) ~= 'number' then
        return redis.error_reply('ERR scores of ' .. ARGV[i] .. ' are not a list of pairs')
      end
    end
    decoded[i] = pairs
  end
end
local changed = 0
for i = 2, #ARGV, 2 do
  local id, new = ARGV[i], ARGV[i + 1]
  local old = redis.call('HGET', KEYS[2], id) or ''
  if old ~= new then
    if old ~= '' then
      for _, pair in ipairs(cjson.decode(old)) do
        if tonumber(redis.call('ZINCRBY', KEYS[1], -pair[2], pair[1])) <= 0 then
          redis.call('ZREM', KEYS[1], pair[1])
        end
      end
    end
    if new == '' then
      redis.call('HDEL', KEYS[2], id)
    else
      for _, pair in ipairs(decoded[i]) do
        redis.call('ZINCRBY', KEYS[1], pair[2], pair[1])
      end
      redis.call('HSET', KEYS[2], id, new)
    end
    changed = changed + 1
  end
end
redis.call('SET', KEYS[3], ARGV[1])
return changed
"""
)

# KEYS: the staging scores and event hash of a rebuild, then the live scores, event hash and cursor.
# ARGV: the cursor. The staged ranking replaces the live one and the
# cursor is set in one atomic step: readers see the whole old ranking or the whole new one.
_SWAP = """
for i = 1, 2 do
  if redis.call('EXISTS', KEYS[i]) == 1 then
    redis.call('RENAME', KEYS[i], KEYS[i + 2])
  else
    redis.call('DEL', KEYS[i + 2])
  end
end
redis.call('SET', KEYS[5], ARGV[1])
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
    """Best sellers in a Redis sorted set `{<namespace>TopBooks}:AllTime` (ZINCRBY quantity bookId).

    `client` is a redis.Redis or a redis.cluster.RedisCluster.
    """

    def __init__(self, client: redis.Redis | redis.cluster.RedisCluster, namespace: str = "") -> None:
        self.client = client
        self.namespace = namespace
        tag = f"{{{namespace}TopBooks}}"
        self.scores_key = f"{tag}:AllTime"
        self.counted_key = f"{tag}:Counted"
        # A new name: a ranking of an older format has no cursor under it, so it is rebuilt (from the
        # orders table, by its consumer) rather than un-counting what it cannot.
        self.cursor_key = f"{tag}:Position"
        self._staging = [f"{tag}:Rebuild:AllTime", f"{tag}:Rebuild:Counted"]
        self._keys = [self.scores_key, self.counted_key, self.cursor_key]
        # The keys of older formats (no hash tag; the first format's event set and cursor), dropped one
        # by one after a rebuild: they may live in other slots of a cluster.
        self._retired = [
            f"{namespace}TopBooks:{part}"
            for part in (
                "AllTime",
                "Counted",
                "Position",
                "Events",
                "Cursor",
                "Rebuild:AllTime",
                "Rebuild:Counted",
            )
        ]
        self._put_all = client.register_script(_PUT_ALL)
        self._swap = client.register_script(_SWAP)
        self._top = client.register_script(_TOP)

    def put_all(self, events: Sequence[Event], cursor: str) -> int:
        args: list[str] = [cursor]
        for event_id, scores in events:
            args += [event_id, encode_scores(event_id, scores)]
        try:
            changed = self._put_all(keys=self._keys, args=args)
        except redis.ResponseError as exc:
            if str(exc).startswith("STALE"):
                raise StaleCursor(f"redis ranking: {exc}") from exc
            raise StorageError(f"redis ranking: put of {len(events)} events failed: {exc}") from exc
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: put of {len(events)} events failed: {exc}") from exc
        return int(changed)

    def rebuild(self, events: Sequence[Event], cursor: str) -> None:
        # Staged under keys of their own, out of readers' sight, then swapped in with the cursor at once.
        latest: dict[str, Mapping[str, int]] = {}
        for event_id, scores in events:
            latest[event_id] = scores  # an event given twice counts as its last, as put_all would
        counted = [
            (event_id, text)
            for event_id, scores in latest.items()
            if (text := encode_scores(event_id, scores))
        ]
        totals: dict[str, int] = {}
        for scores in latest.values():
            for member, score in scores.items():
                totals[member] = totals.get(member, 0) + score
        try:
            self.client.delete(*self._staging)
            for start in range(0, len(counted), REBUILD_CHUNK):
                self.client.hset(self._staging[1], mapping=dict(counted[start : start + REBUILD_CHUNK]))
            members = list(totals.items())
            for start in range(0, len(members), REBUILD_CHUNK):
                self.client.zadd(self._staging[0], dict(members[start : start + REBUILD_CHUNK]))
            self._swap(keys=[*self._staging, *self._keys], args=[cursor])
            for key in self._retired:
                self.client.delete(key)
        except redis.RedisError as exc:
            raise StorageError(f"redis ranking: rebuild of {len(events)} events failed: {exc}") from exc

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


def _text(value: Any) -> str:
    # The client may or may not decode responses; both are accepted.
    return value.decode("utf-8") if isinstance(value, bytes) else str(value)


def _score(value: Any) -> int:
    return int(float(_text(value)))
