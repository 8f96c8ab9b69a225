"""The JSON shape of change-log entries between regions, validated strictly on the way in."""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, StrictInt, StrictStr, ValidationError

from bookstore.domain import errors
from bookstore.ports import Key, TableSchema
from bookstore.replication.tables.model import LogEntry, Version

MAX_BATCH = 5000
# Keys asked for in one request of a repair.
MAX_KEYS = 1000


class _Entry(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)

    seq: StrictInt = Field(ge=0)
    table: StrictStr = Field(max_length=64)
    kind: Literal["INSERT", "MODIFY", "REMOVE"]
    key: dict[str, Any]
    old: dict[str, Any] | None
    new: dict[str, Any] | None
    writtenMs: StrictInt = Field(ge=0)
    origin: StrictStr = Field(max_length=64)
    version: tuple[StrictInt, StrictStr]
    previous: tuple[StrictInt, StrictStr] | None
    # A W3C traceparent (00-<32 hex>-<16 hex>-<2 hex>): only written when tracing is on.
    trace: StrictStr | None = Field(
        default=None, pattern=r"^[0-9a-f]{2}-[0-9a-f]{32}-[0-9a-f]{16}-[0-9a-f]{2}$"
    )


class _Batch(BaseModel):
    model_config = ConfigDict(extra="forbid")

    source: StrictStr = Field(max_length=64)
    entries: list[_Entry] = Field(max_length=MAX_BATCH)


def entry_json(entry: LogEntry) -> dict[str, Any]:
    line = {
        "seq": entry.seq,
        "table": entry.table,
        "kind": entry.kind,
        "key": entry.key,
        "old": entry.old,
        "new": entry.new,
        "writtenMs": entry.written_ms,
        "origin": entry.origin,
        "version": list(entry.version),
        "previous": None if entry.previous is None else list(entry.previous),
    }
    if entry.trace is not None:
        line["trace"] = entry.trace
    return line


def parse_entries(raw: Any, schemas: Mapping[str, TableSchema], regions: Collection[str]) -> list[LogEntry]:
    """Entries from untrusted JSON; any invalid entry refuses the whole batch with ValidationError."""
    try:
        entries = [_Entry.model_validate(e) for e in raw] if isinstance(raw, list) else None
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise errors.ValidationError(f"malformed change entry ({where}): {first.get('msg')}") from None
    if entries is None:
        raise errors.ValidationError("entries must be a list of change entries")
    return [_checked(e, schemas, regions) for e in entries]


def parse_versions(raw: Any) -> list[tuple[Key, Version]]:
    """A bucket's (key, version) pairs from untrusted JSON ([key, hlc, region] each)."""
    if not isinstance(raw, list):
        raise errors.ValidationError("versions must be a list of [key, hlc, region]")
    versions: list[tuple[Key, Version]] = []
    for item in raw:
        if (
            not isinstance(item, list)
            or len(item) != 3
            or not isinstance(item[0], dict)
            or type(item[1]) is not int
            or type(item[2]) is not str
        ):
            raise errors.ValidationError(f"malformed version {item!r}: expected [key, hlc, region]")
        versions.append((item[0], (item[1], item[2])))
    return versions


def parse_batch(
    raw: Any, schemas: Mapping[str, TableSchema], regions: Collection[str]
) -> tuple[str, list[LogEntry]]:
    """(source region, entries) of a pushed batch; refused whole when anything in it is malformed."""
    try:
        batch = _Batch.model_validate(raw)
    except ValidationError as exc:
        first = exc.errors()[0]
        where = ".".join(str(p) for p in first.get("loc", ()))
        raise errors.ValidationError(f"malformed batch ({where}): {first.get('msg')}") from None
    if batch.source not in regions:
        raise errors.ValidationError(f"unknown source region {batch.source!r}")
    return batch.source, [_checked(e, schemas, regions) for e in batch.entries]


def _checked(e: _Entry, schemas: Mapping[str, TableSchema], regions: Collection[str]) -> LogEntry:
    schema = schemas.get(e.table)
    if schema is None:
        raise errors.ValidationError(f"table {e.table!r} is not replicated here")
    if e.origin not in regions or e.version[1] not in regions:
        raise errors.ValidationError(f"entry of unknown region {e.origin!r} / {e.version[1]!r}")
    if e.version[0] <= 0 or (e.previous is not None and e.previous[0] < 0):
        raise errors.ValidationError("versions must be positive")
    if schema.key_of(e.key) != e.key:
        raise errors.ValidationError(f"key of {e.table} must hold exactly its key attributes")
    if (e.kind == "REMOVE") != (e.new is None):
        raise errors.ValidationError("a REMOVE carries no new image, and only a REMOVE")
    if e.new is not None and schema.key_of(e.new) != e.key:
        raise errors.ValidationError("the new image's key differs from the entry's key")
    return LogEntry(
        seq=e.seq,
        table=e.table,
        kind=e.kind,
        key=e.key,
        old=e.old,
        new=e.new,
        written_ms=e.writtenMs,
        origin=e.origin,
        version=(e.version[0], e.version[1]),
        previous=None if e.previous is None else (e.previous[0], e.previous[1]),
        trace=e.trace,
    )
