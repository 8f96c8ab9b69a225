"""The blog replication's state: epochs and their total order, a region's state, diverged writes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Role = Literal["primary", "fenced", "replica"]


def epoch_rank(epoch: int, primary_region: str) -> tuple[int, str]:
    """The total order of epochs: by number, then by the primary's region id (ties of equal numbers)."""
    return (epoch, primary_region)


@dataclass(frozen=True)
class Epoch:
    """One entry of the epoch history: from `epoch` on, `primary_region` took writes; its log forked from
    the lineage before it after `fork_lsn` (its own records have larger lsns)."""

    epoch: int
    primary_region: str
    fork_lsn: int
    started_ms: int

    def json(self) -> dict[str, Any]:
        return {
            "epoch": self.epoch,
            "primary": self.primary_region,
            "forkLsn": self.fork_lsn,
            "startedMs": self.started_ms,
        }


@dataclass(frozen=True)
class BlogState:
    """A region's replication state as stored: epoch, primary, position, whether it must re-sync."""

    region: str
    epoch: int
    read_only: bool
    primary_region: str
    applied_lsn: int
    head_lsn: int
    needs_rejoin: bool
    history: tuple[Epoch, ...]

    @property
    def role(self) -> Role:
        """primary (takes writes), fenced (primary, read-only for a switchover), or replica."""
        if self.primary_region != self.region:
            return "replica"
        return "fenced" if self.read_only else "primary"

    @property
    def writable(self) -> bool:
        return self.role == "primary"

    def json(self) -> dict[str, Any]:
        return {
            "region": self.region,
            "role": self.role,
            "epoch": self.epoch,
            "primaryRegion": self.primary_region,
            "readOnly": self.read_only,
            "appliedLsn": self.applied_lsn,
            "headLsn": self.head_lsn,
            "needsRejoin": self.needs_rejoin,
            "history": [h.json() for h in self.history],
        }


@dataclass(frozen=True)
class DivergedWrite:
    """A change record a former primary accepted after the fork: not in the new primary's lineage."""

    id: int
    lsn: int
    epoch: int
    region: str
    table: str
    pk: dict[str, Any]
    op: str
    row: dict[str, Any] | None
    written_ms: int
    detected_ms: int
    new_epoch: int
    new_primary: str

    def json(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "lsn": self.lsn,
            "epoch": self.epoch,
            "region": self.region,
            "table": self.table,
            "pk": self.pk,
            "op": self.op,
            "row": self.row,
            "writtenMs": self.written_ms,
            "detectedMs": self.detected_ms,
            "newEpoch": self.new_epoch,
            "newPrimary": self.new_primary,
        }


@dataclass(frozen=True)
class Adoption:
    """What meeting a higher epoch did to this region."""

    from_epoch: int
    to_epoch: int
    primary_region: str
    was_primary: bool
    diverged: int
    needs_rejoin: bool
