"""The drill's checks on synthetic recordings: RTO, RPO, loss, duplicates, best sellers, convergence."""

from __future__ import annotations

from typing import Any

import pytest

from bookstore.domain.orders import order_id
from bookstore.drills import checks
from bookstore.drills.workload import BLOG_API, BLOG_POST, Sample, unkeyed_lines

EU, AP = "eu-west-1", "ap-southeast-1"


def read(start: float, status: int = 200, region: str | None = EU, took: float = 0.01) -> Sample:
    return Sample("browse", "GET", "/api/books/b1", start, start + took, status, region=region)


def checkout(
    start: float, key: str, region: str = EU, customer: str = "c1", status: int = 201, took: float = 0.02
) -> Sample:
    ok = 200 <= status < 300
    return Sample(
        "checkout",
        "POST",
        "/api/orders",
        start,
        start + took,
        status,
        region=region if ok else None,
        customer_id=customer,
        idempotency_key=key,
        order_id=order_id(customer, key, 0) if ok else None,
        books=(("b1", 2),),
    )


def test_rto_runs_from_the_first_failure_to_the_start_of_a_whole_window_without_failures() -> None:
    samples = [read(1.0), read(2.0, 502, None), read(2.5, 0, None), read(3.1, region=AP, took=0.2), read(4)]
    assert checks.rto(samples, window_s=2.0, until_s=10.0) == pytest.approx(1.1)
    check = checks.rto_check("browse", samples, window_s=2.0, until_s=10.0)
    assert check["name"] == "RTO of browse"
    assert check["value"] == 1.1 and check["held"] and "2 of 5 failed" in check["detail"]


def test_a_flapping_recovery_counts_until_it_stops_flapping() -> None:
    # Failures at 2.0, 3.0 and 4.5 with successes between them: the first success (2.2) is followed by a
    # failure within 2 s, so is the one at 3.2; the one at 4.7 opens a clean 2-s window.
    samples = [read(1.0), read(2.0, 503, None), read(2.2), read(3.0, 503, None), read(3.2)]
    samples += [read(4.5, 502, None), read(4.7), read(5.5), read(6.0), read(8.0)]
    assert checks.rto(samples, window_s=2.0, until_s=10.0) == pytest.approx(2.7)
    # The same recording under the old rule (first success after the first failure) said 0.21 s.
    assert checks.rto(samples, window_s=0.1, until_s=10.0) == pytest.approx(0.2)
    assert not checks.rto_check("browse", samples, window_s=2.0, until_s=10.0)["held"]


def test_a_window_cut_short_by_the_end_of_the_recording_is_no_recovery() -> None:
    samples = [read(1.0), read(8.5, 503, None), read(9.0)]
    assert checks.rto(samples, window_s=2.0, until_s=10.0) == float("inf")
    check = checks.rto_check("browse", samples, window_s=2.0, until_s=10.0)
    assert check["value"] is None and not check["held"] and "no such 2 s" in check["detail"]


def test_each_kind_has_its_own_rto() -> None:
    def cart(start: float, status: int = 200) -> Sample:
        return Sample(
            "cart", "POST", "/api/cart", start, start + 0.01, status, region=EU, idempotency_key="k"
        )

    # Reads fail only at 2.0; cart writes fail until 5.0: mixed together, the reads' recovery would hide
    # the writes' outage.
    samples = [read(1.0), read(2.0, 502, None), read(2.4), read(3.0), read(6.0), read(9.0)]
    samples += [cart(1.0), cart(2.1, 503), cart(3.5, 503), cart(5.0, 503), cart(5.3), cart(8.0)]
    summary = {k["kind"]: k for k in checks.kind_summaries(samples, window_s=2.0, until_s=10.0)}
    assert summary["browse"]["rtoS"] == 0.4 and summary["cart"]["rtoS"] == 3.2
    assert checks.rto_check("cart", samples, 2.0, 10.0)["value"] == 3.2


def test_rto_is_none_without_failures_and_the_check_holds_at_zero() -> None:
    assert checks.rto([read(1.0), read(2.0)]) is None
    check = checks.rto_check("browse", [read(1.0)])
    assert (check["value"], check["held"]) == (0.0, True)


def test_an_outage_longer_than_the_goal_or_never_recovered_does_not_hold() -> None:
    long = checks.rto_check("browse", [read(1.0, 503, None), read(3.5, region=AP)], 2.0, 10.0)
    assert long["value"] == 2.5 and not long["held"]
    never = checks.rto_check("browse", [read(1.0), read(2.0, 503, None)], 2.0, 10.0)
    assert never["value"] is None and not never["held"]


def test_failed_idempotent_requests_are_counted_with_their_statuses() -> None:
    samples = [read(1.0), read(1.1, 502, None), checkout(1.2, "k1", status=0), checkout(1.3, "k2")]
    check = checks.failed_idempotent_check(samples)
    assert check["value"] == 2 and not check["held"]
    assert "502: 1" in check["detail"] and "no answer: 1" in check["detail"]


def test_rpo_counts_orders_of_the_failed_region_missing_in_the_survivor() -> None:
    samples = [
        checkout(5.0, "k1"),
        checkout(9.90, "k2"),
        checkout(9.95, "k3"),
        checkout(9.96, "k4", region=AP),
    ]
    # Acknowledged by the failed region after it restarted: not part of what the survivor could hold.
    samples.append(checkout(20.0, "k5"))
    survivor = {order_id("c1", "k1", 0): {"b1": 2}, order_id("c1", "k4", 0): {"b1": 2}}
    everything = {order_id("c1", k, 0): {"b1": 2} for k in ("k1", "k2", "k3", "k4", "k5")}
    check = checks.rpo_check(
        samples, 10.0, 85.0, {EU: everything, AP: everything}, EU, {AP: survivor}, looked_s=11.0
    )
    # k2 ended at 9.92, k3 at 9.97: the oldest missing acknowledgement is 80 ms before the fault.
    assert check["value"] == 80.0 and check["held"]
    assert check["detail"].startswith("2 of 5 acknowledged orders missing")
    assert [item.split()[0] for item in check.get("listed", [])] == [
        order_id("c1", k, 0) for k in ("k2", "k3")
    ]


def test_rpo_beyond_the_one_way_delay_does_not_hold() -> None:
    check = checks.rpo_check([checkout(9.0, "k1")], 10.0, 85.0, {AP: {}}, EU, {AP: {}}, looked_s=11.0)
    assert check["value"] == 980.0 and not check["held"]


def test_an_order_missing_after_recovery_counts_in_the_rpo_whatever_its_time() -> None:
    # Acknowledged after the fault (by the survivor) and missing after the recovery: on today's main the
    # window was clamped to 0 and the check held.
    samples = [checkout(12.0, "late", region=AP)]
    check = checks.rpo_check(samples, 10.0, 85.0, {EU: {}, AP: {}}, EU, {AP: {}}, looked_s=11.0)
    assert not check["held"] and "acknowledged at or after the fault" in check["detail"]
    assert "Idempotency-Key late" in check.get("listed", [""])[0]
    # Acknowledged long before the fault and missing after the recovery (not looked up at the failover).
    early = checks.rpo_check([checkout(2.0, "early")], 10.0, 85.0, {EU: {}, AP: {}})
    assert early["value"] == 7980.0 and not early["held"]


def test_an_answer_in_flight_when_the_region_died_counts_in_the_window_not_as_a_late_loss() -> None:
    # Sent 30 ms before the kill, answered 10 ms after it: the region acknowledged it before it died, so
    # its loss is within the fault's recovery point (0 ms), not a loss the fault does not bound.
    samples = [checkout(9.97, "in-flight", took=0.04)]
    check = checks.rpo_check(samples, 10.0, 85.0, {EU: {}, AP: {}}, EU, {AP: {}}, looked_s=11.0)
    assert check["value"] == 0.0 and "at or after the fault" not in check["detail"] and check["held"]
    assert check.get("listed") and "Idempotency-Key in-flight" in check["listed"][0]


def test_rpo_does_not_hold_when_a_region_does_not_answer() -> None:
    k1 = order_id("c1", "k1", 0)
    check = checks.rpo_check([checkout(1.0, "k1")], 10.0, 85.0, {EU: {k1: {"b1": 2}}, AP: None})
    assert not check["held"] and f"did not answer the reads: {AP}" in check["detail"]


def test_an_acknowledged_order_missing_in_any_region_is_lost_and_listed_with_its_key() -> None:
    samples = [checkout(1.0, "k1"), checkout(2.0, "k2"), checkout(3.0, "k3", status=502)]
    k1, k2 = order_id("c1", "k1", 0), order_id("c1", "k2", 0)
    orders = {EU: {k1: {"b1": 2}, k2: {"b1": 2}}, AP: {k1: {"b1": 2}}}
    check = checks.lost_check(samples, orders)
    assert check["value"] == 1 and not check["held"] and f"{AP} 1" in check["detail"]
    assert check.get("listed") == [
        f"{k2} (checkout, Idempotency-Key k2, customer c1, acknowledged at 2.020 s by {EU}) missing in {AP}"
    ]
    assert checks.lost_check(samples, {EU: orders[EU], AP: orders[EU]})["held"]


def test_a_region_that_does_not_answer_the_final_reads_fails_the_loss_check_by_name() -> None:
    k1 = order_id("c1", "k1", 0)
    # On today's main the region that did not answer was left out, and the check held.
    check = checks.lost_check([checkout(1.0, "k1")], {EU: {k1: {"b1": 2}}, AP: None})
    assert not check["held"] and f"did not answer the final reads: {AP}" in check["detail"]
    assert f"{AP} did not answer the final reads" in check.get("listed", [])


def test_an_order_no_idempotency_key_names_is_a_duplicate() -> None:
    samples = [checkout(1.0, "k1"), checkout(2.0, "k2", status=502)]
    k1, k2 = order_id("c1", "k1", 0), order_id("c1", "k2", 0)
    # k2's client saw a failure but the order committed: that is not a duplicate.
    clean = {EU: {k1: {"b1": 2}, k2: {"b1": 2}}, AP: {k1: {"b1": 2}, k2: {"b1": 2}}}
    assert checks.duplicates_check(samples, clean)["value"] == 0
    twice = {EU: {**clean[EU], "0000000000001-abcd": {"b1": 2}}, AP: clean[AP]}
    check = checks.duplicates_check(samples, twice)
    assert check["value"] == 1 and not check["held"]


def unkeyed(start: float, n: int, status: int = 201, order: str | None = None) -> Sample:
    ok = 200 <= status < 300
    return Sample(
        "checkout", "POST", "/api/orders", start, start + 0.02, status, region=EU if ok else None,
        customer_id="c1", order_id=order if ok else None, books=unkeyed_lines(["b1", "b2"], n),
    )  # fmt: skip


def test_a_checkout_without_a_key_carried_out_twice_is_a_duplicate() -> None:
    lines = {b: q for b, q in unkeyed_lines(["b1", "b2"], 7)}
    other = {b: q for b, q in unkeyed_lines(["b1", "b2"], 8)}
    samples = [unkeyed(1.0, 7, order="0001-a"), unkeyed(2.0, 8, status=502)]
    # Attempt 8 failed as its client saw it, yet one order was made: allowed (at most one per attempt).
    once = {EU: {"0001-a": lines, "0002-b": other}, AP: {"0001-a": lines, "0002-b": other}}
    held = checks.duplicates_check(samples, once)
    assert held["held"] and "2 checkouts without a key" in held["detail"]
    # The POST of attempt 7 carried out twice (an edge retrying a request without a key, say).
    twice = {EU: {**once[EU], "0003-c": lines}, AP: once[AP]}
    check = checks.duplicates_check(samples, twice)
    assert check["value"] == 1 and not check["held"]
    assert "0001-a, 0003-c" in check.get("listed", [""])[0]


def test_unkeyed_lines_are_unique_per_attempt() -> None:
    seen = {unkeyed_lines(["b1", "b2"], n) for n in range(99 * 99)}
    assert len(seen) == 99 * 99
    assert all(1 <= q <= 99 for lines in seen for _, q in lines)


def test_best_sellers_must_move_by_the_orders_quantities_in_every_region() -> None:
    orders = {EU: {"o1": {"b1": 2, "b2": 1}, "o2": {"b1": 1}}, AP: {"o1": {"b1": 2, "b2": 1}}}
    assert checks.order_quantities(orders) == {"b1": 3, "b2": 1}
    before = {EU: {"b1": 10}, AP: {"b1": 10}}
    good = {EU: {"b1": 13, "b2": 1}, AP: {"b1": 13, "b2": 1}}
    held = checks.bestsellers_check(orders, before, good, ["b1", "b2"], fresh=False)
    assert held["held"] and "deltas" in held["detail"]
    counted_twice = {EU: {"b1": 16, "b2": 1}, AP: {"b1": 13, "b2": 1}}
    check = checks.bestsellers_check(orders, before, counted_twice, ["b1", "b2"], fresh=False)
    assert check["value"] == 1 and not check["held"] and f"{EU} b1: 6 vs 3" in check["detail"]


def test_convergence_is_measured_from_the_recovery() -> None:
    assert checks.convergence_check("c", 10.0, 12.5)["value"] == 2.5
    assert not checks.convergence_check("c", 10.0, 16.0)["held"]
    assert not checks.convergence_check("c", 10.0, None)["held"]
    assert not checks.convergence_check("c", None, None)["held"]


def test_timeline_buckets_by_second_outcome_and_serving_region() -> None:
    retried = read(0.5, region=AP)
    retried.retried = True
    buckets = checks.timeline([read(0.1), read(0.9), retried, read(1.2, 502, None)])
    assert buckets == [
        {"atS": 0.0, "outcome": "ok", "region": EU, "count": 2},
        {"atS": 0.0, "outcome": "retried", "region": AP, "count": 1},
        {"atS": 1.0, "outcome": "failed", "region": "none", "count": 1},
    ]


def test_kind_summaries() -> None:
    summary = checks.kind_summaries(
        [read(0.0, took=0.010), read(1.0, took=0.030), read(2.0, 502, None), read(3.0, 0, None)]
    )
    assert summary == [
        {
            "kind": "browse",
            "requests": 4,
            "failed": 2,
            "rtoS": 1.01,  # never recovered: from the first failure to the end of the recording
            "p50Ms": 10.0,
            "p99Ms": 30.0,
            "failures": {"502": 1, "no answer": 1},
            "recovered": False,
        }
    ]


def _blog(primary: str, old_role: str, old_follows: str, lag: int, epoch: int = 2) -> dict[str, object]:
    return {
        "primary": primary,
        "epoch": 2,
        "regions": [
            {"regionId": "ap-southeast-1", "role": "primary", "epoch": 2, "primaryRegion": "ap-southeast-1"},
            {
                "regionId": "eu-west-1",
                "role": old_role,
                "epoch": epoch,
                "primaryRegion": old_follows,
                "lagEntries": lag,
                "needsRejoin": False,
                "diverged": 1,
            },
        ],
    }


def test_blog_failover_holds_when_the_old_primary_follows_the_new_one_caught_up() -> None:
    held = checks.blog_failover_check(
        _blog("ap-southeast-1", "replica", "ap-southeast-1", 0), "eu-west-1", "ap-southeast-1"
    )
    assert held["held"] and "diverged: 1" in held["detail"]
    for overview, why in (
        (_blog("eu-west-1", "primary", "eu-west-1", 0), "the primary is 'eu-west-1'"),
        (_blog("ap-southeast-1", "replica", "ap-southeast-1", 7), "behind (lag 7"),
        (_blog("ap-southeast-1", "replica", "ap-southeast-1", 0, epoch=1), "epoch 1"),
    ):
        failed = checks.blog_failover_check(overview, "eu-west-1", "ap-southeast-1")
        assert not failed["held"] and why in failed["detail"], failed


def test_caught_up_means_every_checkpoint_reached_the_heads_taken_at_the_recovery() -> None:
    from bookstore.drills.observe import _holds

    heads = {EU: 120, AP: 40}

    def status(checkpoints: dict[str, int | None]) -> dict[str, object]:
        peers = {r: {"checkpoint": c} for r, c in checkpoints.items()}
        return {"replication": {"peers": peers}}

    assert _holds(status({AP: 40}), EU, heads) and _holds(status({EU: 125}), AP, heads)
    assert not _holds(status({EU: 119}), AP, heads)
    assert not _holds(status({EU: None}), AP, heads)
    assert not _holds(None, AP, heads)


def test_regions_equal_after_the_workload_or_not() -> None:
    assert checks.equal_check(40.0, 40.25) == {**checks.equal_check(40.0, 40.25), "held": True, "value": 0.25}
    assert not checks.equal_check(40.0, None)["held"]


def test_the_acknowledged_rate_counts_the_seconds_that_had_acknowledgements() -> None:
    acked = [checkout(t / 10, f"k{t}", status=201) for t in range(20)]  # 20 in seconds 0 and 1
    down = [checkout(5.0 + t / 10, f"d{t}", status=0) for t in range(30)]  # an outage in between
    writes = [Sample(**{**vars(s), "kind": "writer"}) for s in acked + down]
    assert checks.acknowledged_rate(writes, "writer") == 10.0
    assert checks.acknowledged_rate(writes, "checkout") == 0.0


def test_the_charted_lag_is_the_newest_changes_or_zero_when_caught_up_or_unknown() -> None:
    from bookstore.drills.observe import _lag

    body: dict[str, Any] = {"replication": {}}
    assert _lag(body, {"p50Ms": 90.0, "lastMs": 120.0}, {"connected": True}) == 120.0
    assert _lag(body, {"p50Ms": 3700.0}, {"connected": True}) == 0.0  # nothing new applied lately
    assert _lag(body, {"p50Ms": 90.0, "lastMs": 120.0}, {"connected": False}) is None
    assert _lag(None, None, None) is None


def post(start: float, n: int, status: int = 201, region: str = EU) -> Sample:
    ok = 200 <= status < 300
    sample = Sample(BLOG_POST, "POST", BLOG_API, start, start + 0.03, status, region=region if ok else None)
    sample.title = f"Drill post t {n}"
    return sample


def test_the_blogs_rpo_is_the_window_of_the_acknowledged_posts_it_no_longer_shows() -> None:
    samples = [post(1.0, 1), post(9.93, 2), post(9.95, 3), post(12.0, 4, region=AP), post(9.99, 5, status=0)]
    kept = {"Drill post t 1", "Drill post t 4"}
    final = {EU: kept, AP: kept, "us-east-1": kept}
    check = checks.blog_rpo_check(samples, fault_s=10.0, one_way_ms=85.0, final=final)
    assert check["name"] == "blog RPO" and check["value"] == 40.0 and check["held"]
    assert check["detail"].startswith("2 of 4 acknowledged posts missing")
    # A post the new primary acknowledged after the fault, then lost: not bounded by the fault.
    lost_late = {EU: {"Drill post t 1"}, AP: {"Drill post t 1"}}
    assert not checks.blog_rpo_check(samples, 10.0, 85.0, lost_late)["held"]
    assert not checks.blog_rpo_check(samples, 10.0, 85.0, {EU: kept, AP: None})["held"]


def test_a_lost_post_must_be_kept_aside_as_diverged_and_is_listed() -> None:
    samples = [post(1.0, 1), post(9.93, 2), post(9.97, 3)]
    final = {EU: {"Drill post t 1"}, AP: {"Drill post t 1"}}
    kept = checks.blog_lost_check(samples, final, {EU: {"Drill post t 2"}, AP: {"Drill post t 3"}})
    assert kept["value"] == 2 and kept["held"] and "2 of the missing kept aside" in kept["detail"]
    gone = checks.blog_lost_check(samples, final, {EU: {"Drill post t 2"}, AP: set()})
    assert gone["value"] == 2 and not gone["held"]
    assert gone.get("listed", [])[-1].startswith("Drill post t 3 (blog-post")
    assert gone.get("listed", [])[-1].endswith(f"missing in {EU}, {AP}: gone without a trace")
    silent = checks.blog_lost_check(
        samples,
        {EU: {"Drill post t 1", "Drill post t 2", "Drill post t 3"}, AP: None},
        {EU: set(), AP: set()},
    )
    assert not silent["held"] and f"did not answer: {AP}" in silent["detail"]


def test_a_region_whose_diverged_writes_were_not_read_fails_the_check_without_calling_a_post_gone() -> None:
    # Ireland kept post 2 aside, but its list did not come back: the check cannot hold, and must not say
    # the post is gone without a trace (the drills read each region's list until it answers).
    samples = [post(1.0, 1), post(9.93, 2)]
    final = {EU: {"Drill post t 1"}, AP: {"Drill post t 1"}}
    check = checks.blog_lost_check(samples, final, {EU: None, AP: set()})
    assert not check["held"] and f"diverged writes not read from: {EU}" in check["detail"]
    listed = check.get("listed", [])
    assert listed[0].endswith("not found kept aside") and "gone without a trace" not in " ".join(listed)
    assert listed[-1] == f"{EU} did not answer the read of its diverged writes"


def test_after_a_blog_failover_every_other_region_follows_the_new_primary() -> None:
    overview = _blog("ap-southeast-1", "replica", "ap-southeast-1", 0)
    regions = overview["regions"]
    assert isinstance(regions, list)
    # A third region still following the killed primary: not a completed failover.
    regions.append({"regionId": "us-east-1", "role": "replica", "epoch": 1, "primaryRegion": "eu-west-1"})
    check = checks.blog_failover_check(overview, "eu-west-1", "ap-southeast-1")
    assert not check["held"] and "us-east-1 is 'replica' of 'eu-west-1'" in check["detail"]


def test_the_blogs_writes_have_until_the_promotion_plus_the_goal() -> None:
    samples = [post(1.0, 1), post(6.0, 2, status=503), post(8.5, 3, status=503), post(9.4, 4), post(12.0, 5)]
    plain = checks.rto_check(BLOG_POST, samples, 2.0, 20.0)
    assert plain["value"] == 3.4 and not plain["held"]
    # The promotion answered 3.2 s after the fault: the edge then has the usual 2 s.
    allowed = checks.rto_check(BLOG_POST, samples, 2.0, 20.0, (3.2, "until the promotion"))
    assert (
        allowed["value"] == 3.4
        and allowed["held"]
        and allowed["goal"] == "<= 5.2 s (until the promotion + 2 s)"
    )
    assert not checks.rto_check(BLOG_POST, samples, 2.0, 20.0, (1.0, "until the promotion"))["held"]
