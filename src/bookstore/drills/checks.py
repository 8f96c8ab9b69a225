"""What a drill checks, as pure functions of the recorded requests and the observations."""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from bookstore.domain.orders import order_id
from bookstore.drills.record import Bucket, Check, KindSummary
from bookstore.drills.workload import ORDER_KINDS, WRITER, Sample

# Orders as read back from a region: order id -> {book id: quantity}.
Orders = Mapping[str, Mapping[str, int]]
RTO_GOAL_S = 2.0
CONVERGENCE_GOAL_S = 5.0
RPO_MARGIN_MS = 200.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rto(samples: Iterable[Sample]) -> float | None:
    """Seconds from the start of the first failed request to the end of the first success begun after it."""
    ordered = sorted(samples, key=lambda s: s.start_s)
    first_failure = next((s for s in ordered if not s.ok), None)
    if first_failure is None:
        return None
    after = [s.end_s for s in ordered if s.ok and s.start_s >= first_failure.start_s]
    if not after:
        return math.inf
    return max(0.0, min(after) - first_failure.start_s)


def kind_summaries(samples: Sequence[Sample]) -> list[KindSummary]:
    out: list[KindSummary] = []
    for kind in sorted({s.kind for s in samples}):
        mine = [s for s in samples if s.kind == kind]
        latencies = [(s.end_s - s.start_s) * 1000 for s in mine]
        took = rto(mine)
        if took is not None and math.isinf(took):
            # Never recovered within the recording: the outage lasted at least until its end.
            first = min(s.start_s for s in mine if not s.ok)
            took = max(s.end_s for s in mine) - first
        out.append(
            KindSummary(
                kind=kind,
                requests=len(mine),
                failed=sum(not s.ok for s in mine),
                rtoS=None if took is None else round(took, 3),
                p50Ms=round(_percentile(latencies, 0.50), 1),
                p99Ms=round(_percentile(latencies, 0.99), 1),
                failures=dict(
                    sorted(Counter(str(s.status or "no answer") for s in mine if not s.ok).items())
                ),
            )
        )
    return out


def outcome(sample: Sample) -> str:
    if not sample.ok:
        return "failed"
    return "retried" if sample.retried else "ok"


def timeline(samples: Iterable[Sample]) -> list[Bucket]:
    """Requests per second (by start time), outcome and serving region."""
    counts: Counter[tuple[int, str, str]] = Counter()
    for s in samples:
        if s.kind == WRITER:
            continue  # the chart is the shoppers' view through the edge; the writer is in the kinds table
        region = s.serving_region if s.ok else "none"
        counts[(int(s.start_s), outcome(s), region)] += 1
    return [
        Bucket(atS=float(second), outcome=what, region=region, count=n)
        for (second, what, region), n in sorted(counts.items())
    ]


def rto_check(name: str, samples: Sequence[Sample], kinds: Collection[str]) -> Check:
    mine = [s for s in samples if s.kind in kinds]
    value = rto(mine)
    failed = sum(not s.ok for s in mine)
    if value is None:
        detail = f"none of {len(mine)} requests ({', '.join(sorted(kinds))}) failed"
        return Check(name=name, value=0.0, unit="s", goal=f"<= {RTO_GOAL_S:g} s", held=True, detail=detail)
    shown = None if math.isinf(value) else round(value, 3)
    return Check(
        name=name,
        value=shown,
        unit="s",
        goal=f"<= {RTO_GOAL_S:g} s",
        held=shown is not None and value <= RTO_GOAL_S,
        detail=f"first failed request -> first success begun after it; {failed} of {len(mine)} failed"
        + ("" if shown is not None else "; nothing succeeded after the first failure"),
    )


def failed_idempotent_check(samples: Sequence[Sample]) -> Check:
    """Every shopper's request is idempotent (GETs, and writes with an Idempotency-Key); the edge must
    answer each. The direct writer's requests do not pass the edge: their failures are expected."""
    idempotent = [
        s for s in samples if s.kind != WRITER and (s.method == "GET" or s.idempotency_key is not None)
    ]
    failed = [s for s in idempotent if not s.ok]
    statuses = Counter(s.status for s in failed)
    detail = f"{len(failed)} of {len(idempotent)} idempotent requests failed as the client saw them"
    if failed:
        detail += "; statuses " + ", ".join(f"{k or 'no answer'}: {n}" for k, n in sorted(statuses.items()))
    return Check(
        name="failed idempotent requests", value=len(failed), unit="requests", goal="= 0",
        held=not failed, detail=detail,
    )  # fmt: skip


def acknowledged_orders(samples: Iterable[Sample]) -> dict[str, Sample]:
    """Order id -> the checkout that the client saw acknowledged."""
    return {s.order_id: s for s in samples if s.kind in ORDER_KINDS and s.ok and s.order_id}


def acknowledged_rate(samples: Sequence[Sample], kind: str) -> float:
    """Acknowledged requests of `kind` per second, over the seconds in which any was acknowledged (so a
    region's outage does not dilute the rate it took writes at while it answered)."""
    ends = [s.end_s for s in samples if s.kind == kind and s.ok]
    seconds = len({int(end) for end in ends})
    return len(ends) / seconds if seconds else 0.0


def rpo_check(
    samples: Sequence[Sample],
    failed_region: str,
    fault_s: float,
    survivor: Orders,
    one_way_ms: float,
    looked_s: float,
) -> Check:
    """Acknowledged orders served by the failed region missing in the survivor once replication landed.

    `survivor` is what the survivor held at `looked_s` (after the fault, before the recovery): only
    orders acknowledged before then count.
    """
    served = [
        s
        for s in acknowledged_orders(samples).values()
        if s.serving_region == failed_region and s.end_s <= looked_s
    ]
    missing = [s for s in served if s.order_id not in survivor]
    window_ms = max(0.0, (fault_s - min(s.end_s for s in missing)) * 1000) if missing else 0.0
    goal_ms = one_way_ms + RPO_MARGIN_MS
    return Check(
        name="RPO",
        value=round(window_ms, 1),
        unit="ms",
        goal=f"<= {goal_ms:g} ms (link one-way delay {one_way_ms:g} ms + {RPO_MARGIN_MS:g} ms)",
        held=window_ms <= goal_ms,
        detail=f"{len(missing)} of {len(served)} orders acknowledged by {failed_region} were missing in the "
        "survivor once in-flight replication had landed; window = fault time - oldest such acknowledgement "
        "(orders only: cart rows are overwritten by later writes)",
    )


def lost_check(samples: Sequence[Sample], orders: Mapping[str, Orders]) -> Check:
    """Every acknowledged order in every region after recovery."""
    acked = acknowledged_orders(samples)
    lost = {oid for oid in acked for held in orders.values() if oid not in held}
    where = {r: sum(oid not in held for oid in acked) for r, held in orders.items()}
    return Check(
        name="lost for good",
        value=len(lost),
        unit="orders",
        goal="= 0",
        held=not lost and bool(orders),
        detail=f"{len(acked)} acknowledged orders looked up in every region after recovery; missing per "
        f"region: {', '.join(f'{r} {n}' for r, n in where.items()) or 'no region answered'}",
    )


def duplicates_check(samples: Sequence[Sample], orders: Mapping[str, Orders]) -> Check:
    """An order that no Idempotency-Key of the drill names is a checkout that was placed twice."""
    keyed = {
        order_id(s.customer_id, s.idempotency_key, 0)
        for s in samples
        if s.kind in ORDER_KINDS and s.customer_id and s.idempotency_key
    }
    extra = {oid for held in orders.values() for oid in held if oid not in keyed}
    return Check(
        name="duplicate orders",
        value=len(extra),
        unit="orders",
        goal="= 0",
        held=not extra,
        detail=f"the drill's customers' orders in every region against the {len(keyed)} Idempotency-Keys "
        "sent (one key, one order id in every region)",
    )


def order_quantities(orders: Mapping[str, Orders]) -> dict[str, int]:
    """Quantity per book over the union of the regions' orders (each order once)."""
    union: dict[str, Mapping[str, int]] = {}
    for held in orders.values():
        union.update(held)
    totals: Counter[str] = Counter()
    for lines in union.values():
        totals.update(lines)
    return dict(totals)


def bestsellers_check(
    orders: Mapping[str, Orders],
    before: Mapping[str, Mapping[str, int]],
    after: Mapping[str, Mapping[str, int]],
    books: Collection[str],
    fresh: bool,
) -> Check:
    """Each region's best sellers moved, for the drill's books, by the quantities of the drill's orders."""
    expected = order_quantities(orders)
    wrong: list[str] = []
    for region, now in after.items():
        then = before.get(region, {})
        for book in books:
            moved = now.get(book, 0) - then.get(book, 0)
            if moved != expected.get(book, 0):
                wrong.append(f"{region} {book}: {moved} vs {expected.get(book, 0)}")
    how = "a fresh system (nothing sold before)" if fresh else "deltas against the list before the drill"
    return Check(
        name="best sellers equal the orders",
        value=len(wrong),
        unit="books off",
        goal="= 0",
        held=not wrong and bool(after),
        detail=f"compared {how}, for the {len(books)} books the drill sold, in {len(after)} regions"
        + (f"; off: {'; '.join(wrong[:6])}" if wrong else ""),
    )


def convergence_check(name: str, recovered_s: float | None, converged_s: float | None) -> Check:
    if recovered_s is None:
        return Check(
            name=name, value=None, unit="s", goal=f"<= {CONVERGENCE_GOAL_S:g} s", held=False,
            detail="the fault was never lifted",
        )  # fmt: skip
    if converged_s is None:
        return Check(
            name=name, value=None, unit="s", goal=f"<= {CONVERGENCE_GOAL_S:g} s", held=False,
            detail="some region never caught up with what the others had logged at the recovery",
        )  # fmt: skip
    took = max(0.0, converged_s - recovered_s)
    return Check(
        name=name,
        value=round(took, 3),
        unit="s",
        goal=f"<= {CONVERGENCE_GOAL_S:g} s",
        held=took <= CONVERGENCE_GOAL_S,
        detail="from the end of the recovery until every region had applied every other region's change "
        "log up to where it stood at that moment (checkpoints reached the logs' heads; /status polled "
        "every 0.1 s while the workload went on)",
    )


def equal_check(quiet_s: float, equal_s: float | None) -> Check:
    """Once the workload has stopped, every region holds the same items (equal table digests)."""
    return Check(
        name="regions equal after the workload",
        value=None if equal_s is None else round(max(0.0, equal_s - quiet_s), 3),
        unit="s",
        goal="equal digests",
        held=equal_s is not None,
        detail="every region's /status?digest=true (items and versions of every replicated table) "
        + ("gave one digest, this long after the last request" if equal_s is not None else "never agreed"),
    )


def conflicts_check(before: Mapping[str, int], after: Mapping[str, int]) -> Check:
    """Conflicts are not failures (last writer wins): the check is that every region reports them."""
    added = {r: after[r] - before.get(r, 0) for r in after}
    return Check(
        name="conflicts logged",
        value=sum(added.values()),
        unit="conflicts",
        goal="reported by every region",
        held=bool(after) and set(after) >= set(before),
        detail="conflicts counted during the drill, per region: "
        + (", ".join(f"{r} {n}" for r, n in added.items()) or "no region answered /status"),
    )


def blog_failover_check(overview: Mapping[str, Any], old_primary: str, new_primary: str) -> Check:
    """After promote and rejoin: the promoted region is primary, the old primary its caught-up replica."""
    regions = {r["regionId"]: r for r in overview.get("regions", [])}
    old = regions.get(old_primary) or {}
    problems = []
    if overview.get("primary") != new_primary:
        problems.append(f"the primary is {overview.get('primary')!r}, not {new_primary}")
    if old.get("role") != "replica" or old.get("primaryRegion") != new_primary:
        problems.append(f"{old_primary} is {old.get('role')!r} of {old.get('primaryRegion')!r}")
    if old.get("needsRejoin"):
        problems.append(f"{old_primary} still needs a rejoin")
    if old.get("lagEntries") not in (0, None) or old.get("epoch") != overview.get("epoch"):
        problems.append(f"{old_primary} is behind (lag {old.get('lagEntries')}, epoch {old.get('epoch')})")
    return Check(
        name="blog primary moved, old primary rejoined",
        value=f"{overview.get('primary')} primary at epoch {overview.get('epoch')}",
        unit="",
        goal=f"{new_primary} primary; {old_primary} its caught-up replica",
        held=not problems,
        detail="; ".join(problems)
        or f"{old_primary} follows {new_primary}; writes kept aside as diverged: {old.get('diverged') or 0}",
    )
