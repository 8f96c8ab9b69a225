"""MemoryTable: the Table port held in a dict, for unit tests; keeps the whole contract except durability."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterable, Mapping
from typing import Any, cast

import orjson

from bookstore.domain.errors import ConditionFailed, ValidationError
from bookstore.kernel.clock import SystemClock
from bookstore.ports import (
    ChangeBatch,
    ChangeKind,
    ChangeRecord,
    Clock,
    Condition,
    Item,
    Key,
    Page,
    SortRange,
    TableSchema,
)
from bookstore.storage.items import (
    KeyValue,
    check_changes,
    check_item,
    check_limit,
    decode_cursor,
    encode_cursor,
    holds,
    is_key_value,
    key_parts,
    key_value,
    merged,
    natural,
)

Order = tuple[tuple[int, Any], ...]


class MemoryTable:
    """A Table whose items live in this process only, stored encoded so that callers never share them."""

    def __init__(self, schema: TableSchema, clock: Clock | None = None, *, region: str = "local") -> None:
        self.schema = schema
        self.region = region
        self._clock: Clock = clock if clock is not None else SystemClock()
        self._items: dict[tuple[KeyValue, KeyValue | None], bytes] = {}
        # Records are kept encoded so that a consumer changing what it read cannot change the stream.
        self._log: list[tuple[ChangeKind, bytes, bytes | None, bytes | None, int]] = []
        self._lock = threading.RLock()

    def get(self, key: Key) -> Item | None:
        parts = key_parts(self.schema, key)
        with self._lock:
            doc = self._items.get(parts)
        return None if doc is None else cast(Item, orjson.loads(doc))

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        key = check_item(self.schema, item)
        parts = key_parts(self.schema, key)
        doc = orjson.dumps(item)
        with self._lock:
            old = self._current(parts)
            self._check(condition, old)
            self._write(parts, key, old, doc)

    def update(self, key: Key, changes: Mapping[str, Any], *, condition: Condition | None = None) -> Item:
        parts = key_parts(self.schema, key)
        check_changes(self.schema, changes)
        with self._lock:
            old = self._current(parts)
            self._check(condition, old)
            new = merged(self.schema, dict(key), old, changes)
            self._write(parts, dict(key), old, orjson.dumps(new))
            return new

    def delete(self, key: Key, *, condition: Condition | None = None) -> Item | None:
        parts = key_parts(self.schema, key)
        with self._lock:
            old = self._current(parts)
            self._check(condition, old)
            # Like SqliteTable: a delete of an absent key is still a removal in the stream.
            doc = self._items.pop(parts, None)
            self._log.append(("REMOVE", orjson.dumps(key), doc, None, self._clock.now_ms()))
            return old

    def query(
        self,
        partition: Any,
        *,
        index: str | None = None,
        sort_range: SortRange | None = None,
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        check_limit(limit)
        schema = self.schema
        if index is None:
            pk_name, sk_name = schema.partition_key, schema.sort_key
        else:
            idx = schema.index(index)
            pk_name, sk_name = idx.partition_key, idx.sort_key
        partition = key_value(schema.name, pk_name, partition)
        if sort_range is not None and sk_name is None and (sort_range.low, sort_range.high) != (None, None):
            raise ValidationError(
                f"table {schema.name}: {index or 'the table'} has no sort key to range over"
            )
        low = None if sort_range is None or sort_range.low is None else natural(sort_range.low)
        high = None if sort_range is None or sort_range.high is None else natural(sort_range.high)
        wanted = natural(partition)

        def order(item: Item) -> Order:
            sort = () if sk_name is None else (natural(item[sk_name]),)
            if index is None:
                return sort
            return (*sort, natural(item[schema.partition_key]), natural(item.get(schema.sort_key or "")))

        selected: list[Item] = []
        for item in self._snapshot():
            value = item.get(pk_name)
            if not is_key_value(value) or natural(value) != wanted:
                continue
            if sk_name is not None:
                if not is_key_value(item.get(sk_name)):
                    continue
                sort_value = natural(item[sk_name])
                if (low is not None and sort_value < low) or (high is not None and sort_value > high):
                    continue
            selected.append(item)
        return self._page(selected, order, descending, limit, cursor)

    def scan(self, *, limit: int = 100, cursor: str | None = None) -> Page:
        check_limit(limit)
        schema = self.schema

        def order(item: Item) -> Order:
            return (natural(item[schema.partition_key]), natural(item.get(schema.sort_key or "")))

        return self._page(self._snapshot(), order, False, limit, cursor)

    def changes(self, cursor: str | None = None, *, limit: int = 100) -> ChangeBatch:
        check_limit(limit)
        start = self._position(cursor)
        with self._lock:
            entries = self._log[start : start + limit]
        records = [
            ChangeRecord(
                kind=kind,
                key=orjson.loads(key),
                old=None if old is None else orjson.loads(old),
                new=None if new is None else orjson.loads(new),
                written_ms=written_ms,
                origin=self.region,
            )
            for kind, key, old, new, written_ms in entries
        ]
        return ChangeBatch(records=records, cursor=str(start + len(records)))

    def stream_head(self) -> str:
        with self._lock:
            return str(len(self._log))

    def _position(self, cursor: str | None) -> int:
        if cursor is None:
            return 0
        try:
            position = int(cursor)
        except ValueError as exc:
            raise ValidationError(f"malformed change cursor {cursor!r}") from exc
        if position < 0:
            raise ValidationError(f"malformed change cursor {cursor!r}")
        return position

    def _snapshot(self) -> list[Item]:
        with self._lock:
            docs = list(self._items.values())
        return [orjson.loads(doc) for doc in docs]

    @staticmethod
    def _page(
        items: Iterable[Item],
        order: Callable[[Item], Order],
        descending: bool,
        limit: int,
        cursor: str | None,
    ) -> Page:
        ordered = sorted(items, key=order, reverse=descending)
        if cursor is not None:
            raw = decode_cursor(cursor)
            try:
                after = tuple((rank, value) for rank, value in raw)
                ordered = [i for i in ordered if (order(i) < after if descending else order(i) > after)]
            except (TypeError, ValueError) as exc:
                raise ValidationError(f"malformed page cursor {cursor!r}") from exc
        page = ordered[:limit]
        if len(ordered) <= limit:
            return Page(items=page)
        return Page(items=page, cursor=encode_cursor(order(page[-1])))

    def _current(self, parts: tuple[KeyValue, KeyValue | None]) -> Item | None:
        doc = self._items.get(parts)
        return None if doc is None else cast(Item, orjson.loads(doc))

    def _check(self, condition: Condition | None, old: Item | None) -> None:
        if not holds(condition, old):
            raise ConditionFailed(f"table {self.schema.name}: condition {condition} does not hold")

    def _write(self, parts: tuple[KeyValue, KeyValue | None], key: Key, old: Item | None, doc: bytes) -> None:
        old_doc = self._items.get(parts)
        self._items[parts] = doc
        kind: ChangeKind = "INSERT" if old is None else "MODIFY"
        self._log.append((kind, orjson.dumps(key), old_doc, doc, self._clock.now_ms()))
