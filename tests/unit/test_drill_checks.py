"""The drill's checks on synthetic recordings: RTO, RPO, loss, duplicates, best sellers, convergence."""

from __future__ import annotations

import pytest

from bookstore.domain.orders import order_id
from bookstore.drills import checks
from bookstore.drills.workload import Sample

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


def test_rto_runs_from_the_first_failure_to_the_first_success_begun_after_it() -> None:
    samples = [read(1.0), read(2.0, 502, None), read(2.5, 0, None), read(3.1, region=AP, took=0.2), read(4)]
    assert checks.rto(samples) == pytest.approx(1.3)
    check = checks.rto_check("RTO of API reads", samples, ("browse",))
    assert check["value"] == 1.3 and check["held"] and "2 of 5 failed" in check["detail"]


def test_rto_is_none_without_failures_and_the_check_holds_at_zero() -> None:
    assert checks.rto([read(1.0), read(2.0)]) is None
    check = checks.rto_check("RTO of API reads", [read(1.0)], ("browse",))
    assert (check["value"], check["held"]) == (0.0, True)


def test_an_outage_longer_than_the_goal_or_never_recovered_does_not_hold() -> None:
    long = checks.rto_check("RTO", [read(1.0, 503, None), read(3.5, region=AP)], ("browse",))
    assert long["value"] == 2.51 and not long["held"]
    never = checks.rto_check("RTO", [read(1.0), read(2.0, 503, None)], ("browse",))
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
    check = checks.rpo_check(samples, EU, fault_s=10.0, survivor=survivor, one_way_ms=85.0, looked_s=11.0)
    # k2 ended at 9.92, k3 at 9.97: the oldest missing acknowledgement is 80 ms before the fault.
    assert check["value"] == 80.0 and check["held"]
    assert check["detail"].startswith("2 of 3 orders")


def test_rpo_beyond_the_one_way_delay_does_not_hold() -> None:
    check = checks.rpo_check([checkout(9.0, "k1")], EU, 10.0, survivor={}, one_way_ms=85.0, looked_s=11.0)
    assert check["value"] == 980.0 and not check["held"]


def test_an_acknowledged_order_missing_in_any_region_is_lost() -> None:
    samples = [checkout(1.0, "k1"), checkout(2.0, "k2"), checkout(3.0, "k3", status=502)]
    k1, k2 = order_id("c1", "k1", 0), order_id("c1", "k2", 0)
    orders = {EU: {k1: {"b1": 2}, k2: {"b1": 2}}, AP: {k1: {"b1": 2}}}
    check = checks.lost_check(samples, orders)
    assert check["value"] == 1 and not check["held"] and f"{AP} 1" in check["detail"]
    assert checks.lost_check(samples, {EU: orders[EU], AP: orders[EU]})["held"]


def test_an_order_no_idempotency_key_names_is_a_duplicate() -> None:
    samples = [checkout(1.0, "k1"), checkout(2.0, "k2", status=502)]
    k1, k2 = order_id("c1", "k1", 0), order_id("c1", "k2", 0)
    # k2's client saw a failure but the order committed: that is not a duplicate.
    clean = {EU: {k1: {"b1": 2}, k2: {"b1": 2}}, AP: {k1: {"b1": 2}, k2: {"b1": 2}}}
    assert checks.duplicates_check(samples, clean)["value"] == 0
    twice = {EU: {**clean[EU], "0000000000001-abcd": {"b1": 2}}, AP: clean[AP]}
    check = checks.duplicates_check(samples, twice)
    assert check["value"] == 1 and not check["held"]


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

    body = {"replication": {}}
    assert _lag(body, {"p50Ms": 90.0, "lastMs": 120.0}, {"connected": True}) == 120.0
    assert _lag(body, {"p50Ms": 3700.0}, {"connected": True}) == 0.0  # nothing new applied lately
    assert _lag(body, {"p50Ms": 90.0, "lastMs": 120.0}, {"connected": False}) is None
    assert _lag(None, None, None) is None
