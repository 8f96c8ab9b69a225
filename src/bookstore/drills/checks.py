"""What a drill checks, as pure functions of the recorded requests and the observations."""

from __future__ import annotations

import math
from bisect import bisect_left
from collections import Counter
from collections.abc import Collection, Iterable, Mapping, Sequence
from typing import Any

from bookstore.domain.orders import order_id
from bookstore.drills.record import Bucket, Check, KindSummary
from bookstore.drills.workload import BLOG_POST, ORDER_KINDS, WRITER, Sample

# Orders as read back from a region: order id -> {book id: quantity}.
Orders = Mapping[str, Mapping[str, int]]
RTO_GOAL_S = 2.0
# A kind has recovered once this long passed without one of its requests failing.
RTO_WINDOW_S = 2.0
CONVERGENCE_GOAL_S = 5.0
RPO_MARGIN_MS = 200.0


def _percentile(values: Sequence[float], q: float) -> float:
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, max(0, math.ceil(q * len(ordered)) - 1))]


def rto(
    samples: Iterable[Sample], window_s: float = RTO_WINDOW_S, until_s: float | None = None
) -> float | None:
    """Seconds from the start of the first failed request to the start of the first window of at least
    `window_s` in which no request failed; math.inf when the recording (up to `until_s`, by default the
    last request's start) holds no such window. A flapping recovery counts until it stops flapping.

    The window opens with a successful request begun after every earlier failure: nothing proves a
    recovery before something succeeded.
    """
    ordered = sorted(samples, key=lambda s: s.start_s)
    failures = [s.start_s for s in ordered if not s.ok]
    if not failures:
        return None
    first = failures[0]
    end = ordered[-1].start_s if until_s is None else until_s
    for candidate in ordered:
        opens = candidate.start_s
        if not candidate.ok or opens < first:
            continue
        if opens + window_s > end:
            break  # the recording ends before the window closes: not shown to have recovered
        # The first failure at or after the window's opening, if any, must come after it closes.
        after = bisect_left(failures, opens)
        if after == len(failures) or failures[after] >= opens + window_s:
            return max(0.0, opens - first)
    return math.inf


def kind_summaries(
    samples: Sequence[Sample], window_s: float = RTO_WINDOW_S, until_s: float | None = None
) -> list[KindSummary]:
    """Figures per kind of request, each kind's RTO measured on its own requests alone."""
    end = _recording_end(samples) if until_s is None else until_s
    out: list[KindSummary] = []
    for kind in sorted({s.kind for s in samples}):
        mine = [s for s in samples if s.kind == kind]
        latencies = [(s.end_s - s.start_s) * 1000 for s in mine]
        took = rto(mine, window_s, end)
        recovered = took is None or not math.isinf(took)
        if took is not None and math.isinf(took):
            # Never recovered within the recording: the outage lasted at least until its end.
            first = min(s.start_s for s in mine if not s.ok)
            took = max(end, max(s.end_s for s in mine)) - first
        summary = KindSummary(
            kind=kind,
            requests=len(mine),
            failed=sum(not s.ok for s in mine),
            rtoS=None if took is None else round(took, 3),
            p50Ms=round(_percentile(latencies, 0.50), 1),
            p99Ms=round(_percentile(latencies, 0.99), 1),
            failures=dict(sorted(Counter(str(s.status or "no answer") for s in mine if not s.ok).items())),
        )
        if not recovered:
            summary["recovered"] = False
        out.append(summary)
    return out


def _recording_end(samples: Iterable[Sample]) -> float:
    """Where the recording ends: the last request's start."""
    return max((s.start_s for s in samples), default=0.0)


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


def rto_check(
    kind: str,
    samples: Sequence[Sample],
    window_s: float = RTO_WINDOW_S,
    until_s: float | None = None,
    allowance: tuple[float, str] | None = None,
) -> Check:
    """The RTO of one kind of request, measured on that kind's requests alone.

    `allowance` (seconds, why) adds to the goal a wait that is not the system's to shorten: the blog's
    writes need a promotion, and how soon one is asked for is the operator's (here the drill's) doing.
    """
    mine = [s for s in samples if s.kind == kind]
    value = rto(mine, window_s, _recording_end(samples) if until_s is None else until_s)
    failed = sum(not s.ok for s in mine)
    extra_s, why = allowance or (0.0, "")
    goal_s = RTO_GOAL_S + extra_s
    name = f"RTO of {kind}"
    goal = f"<= {goal_s:.3g} s ({why} + {RTO_GOAL_S:g} s)" if why else f"<= {RTO_GOAL_S:g} s"
    if value is None:
        detail = f"none of {len(mine)} {kind} requests failed"
        return Check(name=name, value=0.0, unit="s", goal=goal, held=True, detail=detail)
    shown = None if math.isinf(value) else round(value, 3)
    return Check(
        name=name,
        value=shown,
        unit="s",
        goal=goal,
        held=shown is not None and value <= goal_s,
        detail=f"first failed {kind} request -> start of the first {window_s:g} s without a failed one; "
        f"{failed} of {len(mine)} failed"
        + (
            ""
            if shown is not None
            else f"; the recording holds no such {window_s:g} s after the first failure"
        ),
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


def _describe(sample: Sample) -> str:
    """An acknowledged write as a person looks it up: what it created, its key, who, when, where."""
    what = sample.order_id or sample.title or sample.path
    key = f"Idempotency-Key {sample.idempotency_key}" if sample.idempotency_key else "no Idempotency-Key"
    return (
        f"{what} ({sample.kind}, {key}, customer {sample.customer_id or '-'}, "
        f"acknowledged at {sample.end_s:.3f} s by {sample.serving_region})"
    )


def _unanswered(held: Mapping[str, object | None]) -> list[str]:
    return [region for region, got in held.items() if got is None]


def loss_window_check(
    name: str,
    what: str,
    missing: Collection[Sample],
    looked_up: int,
    fault_s: float,
    one_way_ms: float,
    silent: Collection[str] = (),
) -> Check:
    """The recovery point: how long before the fault the oldest acknowledged write now missing was made.

    Every acknowledged write found missing counts, whatever its time: one sent at or after the
    fault means the loss is not bounded by the fault at all, and the check does not hold. A region in
    `silent` did not answer the reads: what it holds is unknown, and the check does not hold either.
    """
    # Sent before the fault: its answer may still have been in flight when the fault struck, so it counts
    # in the window (as 0 ms when it arrived after). Sent after: the loss is not bounded by the fault.
    before = [s for s in missing if s.start_s < fault_s]
    late = [s for s in missing if s.start_s >= fault_s]
    window_ms = round(max(0.0, (fault_s - min(s.end_s for s in before)) * 1000), 1) if before else 0.0
    goal_ms = one_way_ms + RPO_MARGIN_MS
    detail = (
        f"{len(missing)} of {looked_up} acknowledged {what} missing; "
        f"window = fault time - oldest acknowledgement among them"
    )
    if late:
        detail += f"; {len(late)} of them sent and acknowledged at or after the fault (not bounded by it)"
    if silent:
        detail += f"; did not answer the reads: {', '.join(silent)}"
    return Check(
        name=name,
        value=window_ms,
        unit="ms",
        goal=f"<= {goal_ms:g} ms (link one-way delay {one_way_ms:g} ms + {RPO_MARGIN_MS:g} ms), "
        "nothing acknowledged after the fault missing",
        held=window_ms <= goal_ms and not late and not silent,
        detail=detail,
        listed=[_describe(s) for s in sorted(missing, key=lambda s: s.end_s)],
    )


def rpo_check(
    samples: Sequence[Sample],
    fault_s: float,
    one_way_ms: float,
    final: Mapping[str, Orders | None],
    failed_region: str | None = None,
    survivors: Mapping[str, Orders | None] | None = None,
    looked_s: float = 0.0,
) -> Check:
    """Acknowledged orders missing: in a survivor once in-flight replication had landed after the failed
    region went down (`survivors`, read at `looked_s`), or in any region after the recovery (`final`).
    """
    acked = acknowledged_orders(samples)
    missing: dict[str, Sample] = {}
    for held in (survivors or {}).values():
        for oid, s in acked.items():
            before_look = s.serving_region == failed_region and s.end_s <= looked_s
            if held is not None and before_look and oid not in held:
                missing[oid] = s
    for held in final.values():
        if held is not None:
            missing |= {oid: s for oid, s in acked.items() if oid not in held}
    silent = sorted(set(_unanswered(final)) | set(_unanswered(survivors or {})))
    check = loss_window_check("RPO", "orders", missing.values(), len(acked), fault_s, one_way_ms, silent)
    if failed_region is not None:
        check["detail"] += (
            f" (in a survivor {looked_s - fault_s:.2f} s after {failed_region} failed, or in any region "
            "after the recovery)"
        )
    return check


def lost_check(samples: Sequence[Sample], orders: Mapping[str, Orders | None]) -> Check:
    """Every acknowledged order in every region after recovery; every region must answer."""
    acked = acknowledged_orders(samples)
    silent = _unanswered(orders)
    answered = {r: held for r, held in orders.items() if held is not None}
    where = {r: [oid for oid in acked if oid not in held] for r, held in answered.items()}
    lost = {oid for missing in where.values() for oid in missing}
    detail = (
        f"{len(acked)} acknowledged orders looked up in every region after recovery; missing per region: "
    )
    detail += ", ".join(f"{r} {len(m)}" for r, m in where.items()) or "no region answered"
    if silent:
        detail += f"; did not answer the final reads: {', '.join(silent)}"
    listed = [
        f"{_describe(acked[oid])} missing in {', '.join(r for r, m in where.items() if oid in m)}"
        for oid in sorted(lost, key=lambda oid: acked[oid].end_s)
    ]
    return Check(
        name="lost for good",
        value=len(lost),
        unit="orders",
        goal="= 0, every region answering",
        held=not lost and not silent and bool(orders),
        detail=detail,
        listed=listed + [f"{r} did not answer the final reads" for r in silent],
    )


def duplicates_check(samples: Sequence[Sample], orders: Mapping[str, Orders | None]) -> Check:
    """Orders per client attempt: one key, one order; one checkout without a key, at most one order.

    A checkout with an Idempotency-Key names its order id in every region. One without a key gets a
    random id, so the workload gives each such attempt lines of its own (`unkeyed_lines`): every order
    with those lines was made by that attempt, and two of them mean a POST was carried out twice (by the
    edge, say). An order that neither a key nor an attempt's lines explain is counted too.
    """
    attempts = [s for s in samples if s.kind in ORDER_KINDS and s.customer_id]
    keyed = {order_id(s.customer_id or "", s.idempotency_key, 0) for s in attempts if s.idempotency_key}
    by_lines: Counter[frozenset[tuple[str, int]]] = Counter(
        frozenset(s.books) for s in attempts if s.idempotency_key is None
    )
    union: dict[str, frozenset[tuple[str, int]]] = {}
    for held in orders.values():
        for oid, books in (held or {}).items():
            union[oid] = frozenset(books.items())
    found: dict[frozenset[tuple[str, int]], list[str]] = {}
    for oid, signature in union.items():
        if oid not in keyed:
            found.setdefault(signature, []).append(oid)
    listed: list[str] = []
    extra = 0
    for signature, ids in sorted(found.items(), key=lambda item: sorted(item[1])):
        allowed = by_lines.get(signature, 0)
        if len(ids) > allowed:
            extra += len(ids) - allowed
            shown = ", ".join(f"{b} x{q}" for b, q in sorted(signature))
            why = f"{allowed} attempt(s) sent" if allowed else "no attempt of the drill sent"
            listed.append(f"{len(ids)} orders with lines {shown} ({why}): {', '.join(sorted(ids))}")
    unkeyed = sum(by_lines.values())
    return Check(
        name="duplicate orders",
        value=extra,
        unit="orders",
        goal="= 0",
        held=not extra,
        detail=f"orders per client attempt in every region: {len(keyed)} Idempotency-Keys sent (one key, "
        f"one order id), {unkeyed} checkouts without a key (at most one order each, told by its lines)",
        listed=listed,
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
    """After promote and rejoin: the promoted region is primary, every other region (the old primary
    first) its caught-up replica at its epoch."""
    regions = {r["regionId"]: r for r in overview.get("regions", [])}
    problems = []
    if overview.get("primary") != new_primary:
        problems.append(f"the primary is {overview.get('primary')!r}, not {new_primary}")
    others = [old_primary, *sorted(r for r in regions if r not in (old_primary, new_primary))]
    for region in others:
        state = regions.get(region) or {}
        if state.get("role") != "replica" or state.get("primaryRegion") != new_primary:
            problems.append(f"{region} is {state.get('role')!r} of {state.get('primaryRegion')!r}")
        if state.get("needsRejoin"):
            problems.append(f"{region} still needs a rejoin")
        if state.get("lagEntries") not in (0, None) or state.get("epoch") != overview.get("epoch"):
            problems.append(f"{region} is behind (lag {state.get('lagEntries')}, epoch {state.get('epoch')})")
    kept = (regions.get(old_primary) or {}).get("diverged") or 0
    return Check(
        name="blog primary moved, old primary rejoined",
        value=f"{overview.get('primary')} primary at epoch {overview.get('epoch')}",
        unit="",
        goal=f"{new_primary} primary; every other region its caught-up replica",
        held=not problems,
        detail="; ".join(problems)
        or f"{', '.join(others)} follow {new_primary}; writes kept aside as diverged: {kept}",
    )


def acknowledged_posts(samples: Iterable[Sample]) -> dict[str, Sample]:
    """Title -> the blog post the author saw acknowledged."""
    return {s.title: s for s in samples if s.kind == BLOG_POST and s.ok and s.title}


def blog_rpo_check(
    samples: Sequence[Sample], fault_s: float, one_way_ms: float, final: Mapping[str, Collection[str] | None]
) -> Check:
    """The blog's own recovery point: acknowledged posts missing in any region's blog after the rejoin."""
    acked = acknowledged_posts(samples)
    missing = {
        t: s for t, s in acked.items() for held in final.values() if held is not None and t not in held
    }
    return loss_window_check(
        "blog RPO", "posts", list(missing.values()), len(acked), fault_s, one_way_ms, _unanswered(final)
    )


def blog_lost_check(
    samples: Sequence[Sample],
    final: Mapping[str, Collection[str] | None],
    diverged: Mapping[str, Collection[str] | None],
) -> Check:
    """Acknowledged posts the blog no longer shows after the rejoin; each must be kept aside as diverged
    (a former primary's writes after the fork are listed, never dropped), none gone without a trace.

    `final` and `diverged`: per region, the titles of its posts and of its diverged writes (None: it did
    not answer). A region whose diverged writes were not read fails the check as one that did not
    answer: a post it may keep aside is not called gone without a trace.
    """
    acked = acknowledged_posts(samples)
    silent = _unanswered(final)
    unread = _unanswered(diverged)
    kept = {t for titles in diverged.values() if titles is not None for t in titles}
    where = {r: [t for t in acked if t not in held] for r, held in final.items() if held is not None}
    lost = sorted({t for missing in where.values() for t in missing}, key=lambda t: acked[t].end_s)
    untraced = [t for t in lost if t not in kept]
    detail = (
        f"{len(acked)} acknowledged posts looked up in every region's blog after the rejoin; missing per "
        "region: "
        + (", ".join(f"{r} {len(m)}" for r, m in where.items()) or "none answered")
        + f"; {len(lost) - len(untraced)} of the missing kept aside as diverged writes"
    )
    if silent:
        detail += f"; did not answer: {', '.join(silent)}"
    if unread:
        detail += f"; diverged writes not read from: {', '.join(unread)}"
    untraced_word = "not found kept aside" if unread else "gone without a trace"
    listed = [
        f"{_describe(acked[t])}, missing in {', '.join(r for r, m in where.items() if t in m)}: "
        + ("kept aside as diverged" if t in kept else untraced_word)
        for t in lost
    ]
    return Check(
        name="blog lost posts",
        value=len(lost),
        unit="posts",
        goal="each one kept aside as diverged, every region answering",
        held=not untraced and not silent and not unread and bool(final),
        detail=detail,
        listed=listed
        + [f"{r} did not answer the final reads" for r in silent]
        + [f"{r} did not answer the read of its diverged writes" for r in unread],
    )
