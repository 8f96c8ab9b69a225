"""The drill record: the JSON shape shared by the drill engine and its report."""

from __future__ import annotations

from typing import NotRequired, TypedDict


class Fault(TypedDict):
    """One injected fault window; endS is None while the fault was never lifted."""

    name: str
    target: str
    startS: float
    endS: float | None


class Event(TypedDict):
    """Something notable at a time: kind in fault, recovery, health, failover, convergence, note."""

    atS: float
    kind: str
    message: str


class Bucket(TypedDict):
    """Requests of one second with one outcome (ok, failed, retried) served by one region (or none)."""

    atS: float
    outcome: str
    region: str
    count: int


class LagPoint(TypedDict):
    """Replication lag of one pair sampled at a time; None when the destination did not answer."""

    atS: float
    source: str
    destination: str
    lagMs: float | None


class KindSummary(TypedDict):
    """Figures of one kind of request: browse, cart, checkout, blog, static."""

    kind: str
    requests: int
    failed: int
    rtoS: float | None
    p50Ms: float
    p99Ms: float
    # Failed requests by what the client got: an HTTP status, or "no answer".
    failures: NotRequired[dict[str, int]]
    # False when no failure-free window followed the first failure: rtoS is then a lower bound.
    recovered: NotRequired[bool]


class Check(TypedDict):
    """One thing checked after the drill, its measured value, its goal and whether it held."""

    name: str
    value: float | int | str | None
    unit: str
    goal: str
    held: bool
    detail: str
    # What the check found wrong, one item each (missing orders with their keys, lost posts...).
    listed: NotRequired[list[str]]


class RegionRef(TypedDict):
    """A region as the report shows it."""

    id: str
    name: str
    flag: str


class Files(TypedDict):
    """Absolute paths of what the drill wrote."""

    record: str
    report: str


class Record(TypedDict):
    """One drill run; times are seconds since the drill's start except startedAt (ISO 8601 UTC)."""

    scenario: str
    description: str
    startedAt: str
    durationS: float
    params: dict[str, object]
    regions: list[RegionRef]
    faults: list[Fault]
    events: list[Event]
    timeline: list[Bucket]
    lag: list[LagPoint]
    kinds: list[KindSummary]
    checks: list[Check]
    passed: bool
    files: Files
