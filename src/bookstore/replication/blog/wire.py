"""The blog replication's wire format: change records, epoch histories, requests and stream lines (JSON)."""

from __future__ import annotations

from typing import Any, Final

import orjson
from pydantic import BaseModel, ConfigDict, Field, StrictBool, StrictInt, StrictStr, TypeAdapter
from pydantic import ValidationError as PydanticError

from bookstore.blog.repository import COLUMNS, OPS, Op, RowChange
from bookstore.domain import errors
from bookstore.replication.blog.state import BlogState, Epoch

PREFIX: Final = "/replication/blog"
# The region id the operator signs its requests with.
OPERATOR: Final = "operator"
# A stream ends after this long (the follower asks again at once): rarely, as a reopening costs a round
# trip during which new records wait at the primary.
STREAM_S: Final = 300.0
SWITCHOVER_TIMEOUT_S: Final = 30.0


def dumps(value: Any) -> str:
    return orjson.dumps(value, option=orjson.OPT_SORT_KEYS).decode()


def change_json(change: RowChange) -> dict[str, Any]:
    return {
        "lsn": change.lsn,
        "epoch": change.epoch,
        "region": change.region,
        "table": change.table,
        "pk": change.pk,
        "op": change.op,
        "row": change.row,
        "writtenMs": change.written_ms,
    }


class _WireChange(BaseModel):
    model_config = ConfigDict(extra="forbid")
    lsn: StrictInt = Field(ge=1)
    epoch: StrictInt = Field(ge=1)
    region: StrictStr = Field(max_length=64)
    table: StrictStr = Field(max_length=64)
    pk: dict[str, Any]
    op: StrictStr = Field(max_length=8)
    row: dict[str, Any] | None
    writtenMs: StrictInt


class _WireEpoch(BaseModel):
    model_config = ConfigDict(extra="forbid")
    epoch: StrictInt = Field(ge=1)
    primary: StrictStr = Field(min_length=1, max_length=64)
    forkLsn: StrictInt = Field(ge=0)
    startedMs: StrictInt = Field(ge=0)


_CHANGES: Final = TypeAdapter(list[_WireChange])
_HISTORY: Final = TypeAdapter(list[_WireEpoch])


def parse_changes(raw: Any) -> list[RowChange]:
    """Change records from JSON, checked (tables and ops known; the repository checks rows on apply)."""
    try:
        wire = _CHANGES.validate_python(raw if raw is not None else [])
    except PydanticError as exc:
        raise errors.ValidationError(f"malformed change records: {str(exc)[:300]}") from None
    out = []
    for c in wire:
        if c.table not in COLUMNS or c.op not in OPS:
            raise errors.ValidationError(f"change {c.lsn}: unknown table {c.table!r} or op {c.op!r}")
        op: Op = "INSERT" if c.op == "INSERT" else "UPDATE" if c.op == "UPDATE" else "DELETE"
        out.append(RowChange(c.lsn, c.epoch, c.region, c.table, c.pk, op, c.row, c.writtenMs))
    return out


def parse_history(raw: Any) -> list[Epoch]:
    try:
        wire = _HISTORY.validate_python(raw if raw is not None else [])
    except PydanticError as exc:
        raise errors.ValidationError(f"malformed epoch history: {str(exc)[:300]}") from None
    return [Epoch(h.epoch, h.primary, h.forkLsn, h.startedMs) for h in wire]


class FollowRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    region: StrictStr = Field(max_length=64)
    epoch: StrictInt = Field(ge=1)
    primaryRegion: StrictStr = Field(max_length=64)
    readOnly: bool
    history: list[dict[str, Any]] = Field(default_factory=list, max_length=10_000)
    after: StrictInt | None = Field(default=None, ge=0)
    afterEpoch: StrictInt = Field(default=0, ge=0)
    streamMs: StrictInt = Field(default=int(STREAM_S * 1000), ge=0, le=300_000)


class PromoteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    force: StrictBool = False
    minEpoch: StrictInt = Field(default=0, ge=0)
    waitForLsn: StrictInt | None = Field(default=None, ge=0)
    timeoutS: float = Field(default=SWITCHOVER_TIMEOUT_S, gt=0, le=600)


class SwitchoverRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")
    target: StrictStr = Field(max_length=64)
    timeoutS: float = Field(default=SWITCHOVER_TIMEOUT_S, gt=0, le=600)


class EmptyRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")


def announce(state: BlogState) -> dict[str, Any]:
    return {
        "epoch": state.epoch,
        "primaryRegion": state.primary_region,
        "readOnly": state.read_only,
        "history": [h.json() for h in state.history],
    }
