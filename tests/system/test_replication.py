"""Table replication between real region processes (issue 3's "Done when"), in both layouts: on one machine
across the link simulator, and on separate hosts (network namespaces, direct links).
"""

from __future__ import annotations

import operator
import os
import re
import subprocess
import sys
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterable
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import jwt
import orjson
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bookstore.kernel.auth import sign
from bookstore.kernel.clock import HybridLogicalClock
from tests.support import waiting
from tests.support.layouts import Layout, OnOneMachine
from tests.support.pages import every_page
from tests.support.regions import Running

pytestmark = pytest.mark.system

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"
PASSWORD = "replicated-password"
# Generous bounds for a shared 2-core machine; every wait ends as soon as its condition holds.
CONVERGE_S = 45.0

T = TypeVar("T")


# -- bounded waiting ---------------------------------------------------------------------------------


def wait_for(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = CONVERGE_S) -> T:
    return waiting.wait_for(what, probe, ok, timeout)


# -- the system as a user and an operator see it ---------------------------------------------------


def add_user(system: Running, email: str, region: str = EU) -> None:
    system.cli(
        "users", "add", email, "--password", PASSWORD, "--data-dir", str(system.data_dir), "--region", region
    )


def signin(api: httpx.Client, email: str) -> dict[str, str]:
    """Authorization headers from signing in at `api`, waiting for the user to have replicated there."""
    r = wait_for(
        f"sign-in of {email} at {api.base_url}",
        lambda: api.post("/auth/signin", json={"email": email, "password": PASSWORD}),
        lambda r: r.status_code == 200,
    )
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def state_digest(api: httpx.Client) -> str:
    r = api.get("/status", params={"digest": "true"})
    r.raise_for_status()
    digest: str = r.json()["stateDigest"]
    return digest


def converge(system: Running, regions: Iterable[str], timeout: float = CONVERGE_S) -> str:
    """Wait until every region's digest of its replicated tables is the same; return that digest."""
    apis = [system.api(r) for r in regions]
    digests = wait_for(
        "equal state digests in " + ", ".join(str(a.base_url) for a in apis),
        lambda: [state_digest(a) for a in apis],
        lambda ds: len(set(ds)) == 1,
        timeout,
    )
    return digests[0]


def settle(system: Running, regions: Iterable[str], quiet_s: float = 2.0, timeout: float = CONVERGE_S) -> str:
    """Wait until every region holds the same state and it has not changed for `quiet_s`; return its digest.

    Regions write on their own after they answer /health (signing keys, object store buckets), so a
    test that checks that something changes nothing first waits for those writes to be over.
    """
    apis = [system.api(r) for r in regions]
    deadline = time.monotonic() + timeout
    since, seen = time.monotonic(), [""]
    while True:
        try:
            digests = [state_digest(a) for a in apis]
        except httpx.HTTPError as exc:
            digests = [repr(exc)]
        if digests != seen or len(set(digests)) != 1:
            since, seen = time.monotonic(), digests
        elif time.monotonic() - since >= quiet_s:
            return digests[0]
        if time.monotonic() >= deadline:
            pytest.fail(f"no settled equal state within {timeout:.0f} s; last digests: {digests}")
        time.sleep(0.1)


def conflict_count(api: httpx.Client) -> int:
    count: int = api.get("/status").json()["replication"]["conflicts"]
    return count


def metric(api: httpx.Client, sample: str, **labels: str) -> float:
    """The sum of a Prometheus sample of the region's /metrics over the series matching `labels`."""
    text = api.get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def listed_conflicts(system: Running, region: str) -> list[str]:
    """The rows `bookstore conflicts` prints for a region (wide, so that no cell wraps)."""
    cmd = [sys.executable, "-m", "bookstore", "conflicts", "--region", region]
    cmd += ["--data-dir", str(system.data_dir), "--topology", str(system.topology_file)]
    out = subprocess.run(
        cmd, capture_output=True, text=True, check=True, timeout=120, env={**os.environ, "COLUMNS": "400"}
    ).stdout
    return [line for line in out.splitlines() if "carts" in line]


def versions_in(line: str) -> list[tuple[int, str]]:
    return [(int(hlc), region) for hlc, region in re.findall(r"\((\d+), '([a-z0-9-]+)'\)", line)]


def place_order(
    api: httpx.Client, auth: dict[str, str], key: str, lines: list[dict[str, Any]]
) -> httpx.Response:
    return api.post("/orders", json={"books": lines}, headers={**auth, "Idempotency-Key": key})


def orders_of(api: httpx.Client, auth: dict[str, str]) -> dict[str, list[tuple[str, int]]]:
    """The customer's orders in that region: order id -> sorted (bookId, quantity) lines."""
    orders = every_page(api, "/orders", auth)
    return {o["orderId"]: sorted((b["bookId"], b["quantity"]) for b in o["books"]) for o in orders}


def lines_of(lines: list[dict[str, Any]]) -> list[tuple[str, int]]:
    return sorted((line["bookId"], line["quantity"]) for line in lines)


def sold(orders: Iterable[list[tuple[str, int]]]) -> dict[str, int]:
    """Quantity sold per book over `orders`: what best sellers must show, exactly."""
    total: Counter[str] = Counter()
    for lines in orders:
        for book, quantity in lines:
            total[book] += quantity
    return dict(total)


def bestsellers(api: httpx.Client) -> dict[str, int]:
    return {b["bookId"]: b["quantity"] for b in api.get("/bestsellers").json()}


def cart_of(api: httpx.Client, auth: dict[str, str]) -> dict[str, int]:
    r = api.get("/cart", headers=auth)
    r.raise_for_status()
    return {row["bookId"]: row["quantity"] for row in r.json()}


def book_ids(system: Running) -> list[str]:
    return sorted(b["id"] for b in system.api(EU).get("/books").json())


# -- 1. a write in one region is readable in every other --------------------------------------------


def test_a_write_in_one_region_is_read_in_every_other(layout: Layout, tmp_path: Path) -> None:
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)

        # `up` seeds Ireland only; Singapore gets the catalog by replication from Ireland.
        catalog = sorted(eu.get("/books").json(), key=lambda b: b["id"])
        assert len(catalog) == 56
        wait_for(
            "the seed catalog in Singapore",
            lambda: sorted(ap.get("/books").json(), key=lambda b: b["id"]),
            lambda books: books == catalog,
        )
        assert metric(ap, "bookstore_replication_applied_total", source=EU) >= 56

        add_user(system, "shopper@example.com", EU)
        ap_auth = signin(ap, "shopper@example.com")  # the user, created in Ireland, signs in in Singapore
        eu_auth = signin(eu, "shopper@example.com")

        # Each region signs with its own key; Ireland accepts Singapore's once the keys table replicated.
        ap_kid = jwt.get_unverified_header(ap_auth["Authorization"].split()[1])["kid"]
        eu_kid = jwt.get_unverified_header(eu_auth["Authorization"].split()[1])["kid"]
        assert ap_kid != eu_kid
        wait_for(
            "Singapore's signing key in Ireland's JWKS",
            lambda: [k["kid"] for k in eu.get("/.well-known/jwks.json").json()["keys"]],
            lambda kids: ap_kid in kids,
        )

        # A cart row written in Singapore is read in Ireland, with Singapore's token.
        book_a, book_b, book_c = catalog[0]["id"], catalog[1]["id"], catalog[2]["id"]
        assert ap.post("/cart", json={"bookId": book_a, "quantity": 3}, headers=ap_auth).status_code == 201
        row = wait_for(
            "Singapore's cart row in Ireland",
            lambda: eu.get(f"/cart/{book_a}", headers=ap_auth),
            lambda r: r.status_code == 200,
        )
        assert row.json()["quantity"] == 3

        # An order placed in Singapore: in Ireland's order history and best sellers; the cart row it
        # consumed is deleted in Ireland too (a tombstone replicates).
        lines = [{"bookId": book_a, "quantity": 2}, {"bookId": book_b, "quantity": 5}]
        placed = place_order(ap, ap_auth, "sg-order-1", lines)
        assert placed.status_code == 201, placed.text
        order_id = placed.json()["orderId"]
        wait_for(
            "Singapore's order in Ireland's history",
            lambda: orders_of(eu, eu_auth),
            lambda orders: orders == {order_id: lines_of(lines)},
        )
        wait_for(
            "Singapore's order in Ireland's best sellers",
            lambda: bestsellers(eu),
            lambda top: top == {book_a: 2, book_b: 5},
        )
        assert eu.get(f"/cart/{book_a}", headers=eu_auth).status_code == 404

        # And the other way: a cart row written in Ireland is read in Singapore.
        assert eu.post("/cart", json={"bookId": book_c, "quantity": 4}, headers=eu_auth).status_code == 201
        wait_for(
            "Ireland's cart row in Singapore",
            lambda: cart_of(ap, ap_auth),
            lambda cart: cart == {book_c: 4},
        )

        # Ireland, where the user was created, crashes: Singapore still signs the user in and serves them.
        system.kill(EU)
        with pytest.raises(httpx.TransportError):
            eu.get("/health", timeout=2)
        assert not system.running(EU) and system.running(AP)
        during = ap.post("/auth/signin", json={"email": "shopper@example.com", "password": PASSWORD})
        assert during.status_code == 200, during.text
        auth = {"Authorization": f"Bearer {during.json()['accessToken']}"}
        assert orders_of(ap, auth) == {order_id: lines_of(lines)}
        assert ap.get("/cart", headers=auth).status_code == 200


# -- 2. concurrent conflicting writes converge to one winner, and the conflict is logged ---------------


def test_concurrent_writes_to_one_item_converge_to_one_winner_and_are_logged(
    layout: Layout, tmp_path: Path
) -> None:
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "both@example.com", EU)
        eu_auth, ap_auth = signin(eu, "both@example.com"), signin(ap, "both@example.com")
        book = book_ids(system)[5]

        # A row both regions hold before the partition.
        assert eu.post("/cart", json={"bookId": book, "quantity": 1}, headers=eu_auth).status_code == 201
        wait_for("the row in Singapore", lambda: cart_of(ap, ap_auth), lambda c: c == {book: 1})
        converge(system, (EU, AP))
        assert conflict_count(eu) == conflict_count(ap) == 0
        assert listed_conflicts(system, EU) == [] and listed_conflicts(system, AP) == []

        system.cut(EU, AP)
        written = {EU: 3, AP: 7}
        assert eu.put("/cart", json={"bookId": book, "quantity": 3}, headers=eu_auth).status_code == 200
        assert ap.put("/cart", json={"bookId": book, "quantity": 7}, headers=ap_auth).status_code == 200
        # Partitioned, each side reads its own write.
        assert cart_of(eu, eu_auth) == {book: 3} and cart_of(ap, ap_auth) == {book: 7}
        system.heal(EU, AP)

        converge(system, (EU, AP))
        quantities = {r: cart_of(system.api(r), auth)[book] for r, auth in ((EU, eu_auth), (AP, ap_auth))}
        assert quantities[EU] == quantities[AP] in (3, 7)

        # Each region met the other's write as concurrent with its own: both count and list the conflict,
        # with the same winner, the higher version, whose write is what every region now holds.
        wait_for("a conflict counted in Ireland", lambda: conflict_count(eu), lambda n: n >= 1)
        wait_for("a conflict counted in Singapore", lambda: conflict_count(ap), lambda n: n >= 1)
        seen = {}
        for region in (EU, AP):
            rows = [line for line in listed_conflicts(system, region) if book in line]
            assert len(rows) == 1, rows
            winner, loser = versions_in(rows[0])
            seen[region] = (winner, loser)
            assert winner > loser
            assert {winner[1], loser[1]} == {EU, AP}
        assert seen[EU] == seen[AP]
        winner_region = seen[EU][0][1]
        assert quantities[EU] == written[winner_region]


# -- 3. a partition with writes on both sides, healed: converged, nothing acknowledged lost ------------


def test_partition_with_writes_on_both_sides_converges_and_loses_nothing(
    layout: Layout, tmp_path: Path
) -> None:
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "split@example.com", EU)
        auth = {EU: signin(eu, "split@example.com"), AP: signin(ap, "split@example.com")}
        books = book_ids(system)
        order_books, only_eu, only_ap, shared = books[:8], books[10:12], books[12:14], books[14:17]
        converge(system, (EU, AP))

        system.cut(EU, AP)
        acknowledged: dict[str, list[tuple[str, int]]] = {}
        by_key: dict[str, tuple[str, list[dict[str, Any]]]] = {}
        last_write: dict[str, dict[str, int]] = {EU: {}, AP: {}}
        for region, own_rows, offset in ((EU, only_eu, 0), (AP, only_ap, 5)):
            api = system.api(region)
            for i in range(50):
                lines = [{"bookId": order_books[(i + offset) % 8], "quantity": i % 7 + 1}]
                if i % 3 == 0:
                    lines.append({"bookId": order_books[(i + 3) % 8], "quantity": 2})
                r = place_order(api, auth[region], f"{region}-{i}", lines)
                assert r.status_code == 201, r.text
                acknowledged[r.json()["orderId"]] = lines_of(lines)
                by_key[f"{region}-{i}"] = (r.json()["orderId"], lines)
                if i % 5 == 0:  # cart updates interleaved: rows of one side only, and rows both sides write
                    for n, book in enumerate((*own_rows, *shared)):
                        quantity = (i // 5 + n + offset) % 9 + 1
                        r = api.post(
                            "/cart", json={"bookId": book, "quantity": quantity}, headers=auth[region]
                        )
                        assert r.status_code == 201, r.text
                        last_write[region][book] = quantity
            # The partition is real: this side holds its own 50 orders and none of the other's.
            assert len(orders_of(api, auth[region])) == 50
        assert len(acknowledged) == 100
        # A checkout retried in the other side of the partition with its Idempotency-Key: both sides
        # accept it (neither knows of the other's), as one order id in two versions; it must count once.
        for i in range(3):
            lines = [{"bookId": order_books[i], "quantity": 4}]
            both = [place_order(system.api(r), auth[r], f"both-{i}", lines) for r in (EU, AP)]
            assert [r.status_code for r in both] == [201, 201], [r.text for r in both]
            assert both[0].json()["orderId"] == both[1].json()["orderId"]
            acknowledged[both[0].json()["orderId"]] = lines_of(lines)

        system.heal(EU, AP)
        converge(system, (EU, AP))

        for region in (EU, AP):
            api = system.api(region)
            # Every acknowledged order, with its lines, in every region; nothing else.
            assert orders_of(api, auth[region]) == acknowledged
            cart = cart_of(api, auth[region])
            for book in only_eu:
                assert cart[book] == last_write[EU][book]
            for book in only_ap:
                assert cart[book] == last_write[AP][book]
            for book in shared:  # both sides wrote it: the last write of one side won, the same everywhere
                assert cart[book] in (last_write[EU][book], last_write[AP][book])
            wait_for(
                f"exact best sellers in {region}",
                partial(bestsellers, api),
                lambda top: top == sold(acknowledged.values()),
            )
        assert cart_of(eu, auth[EU]) == cart_of(ap, auth[AP])

        # A checkout retried in the other region with its Idempotency-Key is the same order, not a new one.
        replay = place_order(ap, auth[AP], f"{EU}-7", by_key[f"{EU}-7"][1])
        assert replay.status_code == 200, replay.text
        assert replay.json()["orderId"] == by_key[f"{EU}-7"][0]
        assert orders_of(ap, auth[AP]) == acknowledged


# -- 3b. one Idempotency-Key checked out in both sides of a partition: the first order is the one kept ----


def conflicts_of(system: Running, region: str, table: str) -> list[dict[str, Any]]:
    """The conflicts `bookstore conflicts --json` lists for a region, of one table."""
    out = system.cli("conflicts", "--region", region, "--json", "--data-dir", str(system.data_dir)).stdout
    return [c for c in orjson.loads(out) if c["table"] == table]


def test_one_key_checked_out_in_two_regions_keeps_the_first_order_everywhere(
    layout: Layout, tmp_path: Path
) -> None:
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "twice@example.com", EU)
        auth = {EU: signin(eu, "twice@example.com"), AP: signin(ap, "twice@example.com")}
        books = book_ids(system)
        # An order both regions hold before the partition, so best sellers hold more than the conflict.
        before = place_order(ap, auth[AP], "before-the-cut", [{"bookId": books[3], "quantity": 1}])
        assert before.status_code == 201, before.text
        converge(system, (EU, AP))

        system.cut(EU, AP)
        first_lines = [{"bookId": books[0], "quantity": 2}]
        later_lines = [{"bookId": books[1], "quantity": 5}, {"bookId": books[0], "quantity": 1}]
        first = place_order(eu, auth[EU], "pay-once", first_lines)
        assert first.status_code == 201, first.text
        time.sleep(0.05)  # Singapore's checkout is later by the clock as well
        later = place_order(ap, auth[AP], "pay-once", later_lines)
        # Singapore cannot know Ireland's order: it accepts the key with its own lines, as the same id.
        assert later.status_code == 201, later.text
        order_id = first.json()["orderId"]
        assert later.json()["orderId"] == order_id and later.json() != first.json()
        wait_for(
            "Singapore's best sellers counting its own version",
            lambda: bestsellers(ap),
            lambda top: top == sold([lines_of(later_lines), [(books[3], 1)]]),
        )

        system.heal(EU, AP)
        converge(system, (EU, AP))
        kept = {order_id: lines_of(first_lines), before.json()["orderId"]: [(books[3], 1)]}
        for region in (EU, AP):
            api = system.api(region)
            # Every region holds the first accepted version: lines, date and total the shopper was shown.
            assert orders_of(api, auth[region]) == kept
            (shown,) = [o for o in every_page(api, "/orders", auth[region]) if o["orderId"] == order_id]
            assert shown == first.json()
            # The replaced version is un-counted, the kept one counted once.
            wait_for(
                f"best sellers of the kept orders in {region}",
                partial(bestsellers, api),
                lambda top: top == sold(kept.values()),
            )
            # A replay of the kept checkout answers the kept order; one with the replaced lines is refused.
            replay = place_order(api, auth[region], "pay-once", first_lines)
            assert replay.status_code == 200 and replay.json() == first.json(), replay.text
            refused = place_order(api, auth[region], "pay-once", later_lines)
            assert refused.status_code == 409 and refused.json()["error"] == "Conflict", refused.text
            # Each region met the other's version as a conflict: listed, the first one the winner.
            wait_for(
                f"the order's conflict listed in {region}",
                partial(conflicts_of, system, region, "orders"),
                lambda listed: len(listed) == 1,
            )
            (conflict,) = conflicts_of(system, region, "orders")
            assert conflict["key"]["orderId"] == order_id
            assert conflict["winner_version"][1] == EU and conflict["loser_version"][1] == AP
            assert conflict["winner_version"] < conflict["loser_version"]
            assert conflict["loser_image"]["books"] == later.json()["books"]
        assert state_digest(eu) == state_digest(ap)


# -- 4. kill -9 during a stream of writes, then restart ------------------------------------------------


def test_kill_9_during_writes_then_restart_loses_nothing_and_applies_nothing_twice(
    layout: Layout, tmp_path: Path
) -> None:
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "stream@example.com", EU)
        auth = {EU: signin(eu, "stream@example.com"), AP: signin(ap, "stream@example.com")}
        books = book_ids(system)[20:26]
        converge(system, (EU, AP))

        acknowledged: dict[str, list[tuple[str, int]]] = {}
        # Orders asked for once the link was cut: they cannot reach Singapore before Ireland restarts.
        after_cut: set[str] = set()
        cut_done = threading.Event()
        failover: list[tuple[list[dict[str, Any]], httpx.Response]] = []
        refused: list[str] = []

        def write_orders() -> None:
            with httpx.Client(base_url=eu.base_url, timeout=10) as client:
                for i in range(100_000):
                    lines = [{"bookId": books[i % 6], "quantity": i % 4 + 1}]
                    key = f"stream-{i}"
                    cut_before = cut_done.is_set()
                    try:
                        r = place_order(client, auth[EU], key, lines)
                    except httpx.TransportError:
                        # Ireland died under this request: retry it in Singapore with the same key, as a
                        # client or the edge would. Ireland may have written it: it must not count twice.
                        with httpx.Client(base_url=ap.base_url, timeout=10) as other:
                            failover.append((lines, place_order(other, auth[AP], key, lines)))
                        return
                    if r.status_code != 201:
                        refused.append(r.text)
                        return
                    acknowledged[r.json()["orderId"]] = lines_of(lines)
                    if cut_before:
                        after_cut.add(r.json()["orderId"])

        writer = threading.Thread(target=write_orders, daemon=True)
        writer.start()
        wait_for("orders acknowledged by Ireland", lambda: len(acknowledged), lambda n: n >= 10, timeout=60)
        system.cut(EU, AP, reset=True)
        cut_done.set()
        wait_for("orders acknowledged during the cut", lambda: len(after_cut), lambda n: n >= 10, timeout=60)
        system.kill(EU)
        writer.join(timeout=30)
        assert not writer.is_alive() and not refused, refused
        assert len(failover) == 1, failover
        retried_lines, retried = failover[0]
        assert retried.status_code == 201, retried.text  # Singapore could not know of it: the link was cut
        acknowledged[retried.json()["orderId"]] = lines_of(retried_lines)

        # Singapore keeps taking orders while Ireland is down.
        for i in range(5):
            lines = [{"bookId": books[i], "quantity": 3}]
            r = place_order(ap, auth[AP], f"while-down-{i}", lines)
            assert r.status_code == 201, r.text
            acknowledged[r.json()["orderId"]] = lines_of(lines)

        system.heal(EU, AP)
        # What Ireland acknowledged during the cut exists only on Ireland's disk so far.
        assert not after_cut & set(orders_of(ap, auth[AP]))

        system.start(EU)
        converge(system, (EU, AP))
        for region in (EU, AP):
            api = system.api(region)
            orders = orders_of(api, auth[region])
            # Every acknowledged order, and nothing else (the retried one exists once).
            assert orders == acknowledged
            wait_for(
                f"best sellers in {region} equal to the quantities of all orders",
                partial(bestsellers, api),
                partial(operator.eq, sold(orders.values())),
            )


# -- 5. three regions, the direct link cut: writes go around -------------------------------------------


def link_bytes(system: OnOneMachine, pairs: Iterable[tuple[str, str]]) -> dict[tuple[str, str], int]:
    """The bytes each link carried, as the link simulator counts them (on separate hosts nothing counts
    them per link: the blackhole routes drop them unsent)."""
    links = {(link["src"], link["dst"]): link for link in system.control("GET", "/links")["links"]}
    return {pair: links[pair]["bytes"] for pair in pairs}


def test_with_the_direct_link_cut_writes_reach_through_the_third_region(
    layout: Layout, tmp_path: Path
) -> None:
    with layout.up(tmp_path, (EU, AP, US)) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "around@example.com", EU)
        auth = {EU: signin(eu, "around@example.com"), AP: signin(ap, "around@example.com")}
        converge(system, (EU, AP, US))
        books = book_ids(system)

        system.cut(EU, AP)
        assert system.cut_pairs() == {(EU, AP), (AP, EU)}
        simulated = system if isinstance(system, OnOneMachine) else None
        direct = link_bytes(simulated, ((EU, AP), (AP, EU))) if simulated else {}

        via_us = metric(ap, "bookstore_replication_applied_total", source=US)
        assert eu.post("/cart", json={"bookId": books[0], "quantity": 2}, headers=auth[EU]).status_code == 201
        wait_for("Ireland's write in Singapore", lambda: cart_of(ap, auth[AP]), lambda c: c == {books[0]: 2})
        assert metric(ap, "bookstore_replication_applied_total", source=US) > via_us

        via_us = metric(eu, "bookstore_replication_applied_total", source=US)
        lines = [{"bookId": books[1], "quantity": 6}]
        placed = place_order(ap, auth[AP], "around-1", lines)
        assert placed.status_code == 201, placed.text
        wait_for(
            "Singapore's order in Ireland",
            lambda: orders_of(eu, auth[EU]),
            lambda orders: orders == {placed.json()["orderId"]: lines_of(lines)},
        )
        wait_for(
            "Singapore's order in Ireland's best sellers",
            lambda: bestsellers(eu),
            lambda t: t == {books[1]: 6},
        )
        assert metric(eu, "bookstore_replication_applied_total", source=US) > via_us

        converge(system, (EU, AP, US))
        if simulated is not None:
            assert link_bytes(simulated, direct) == direct  # not a byte crossed directly


# -- 6. a third region joins a running pair that holds data ---------------------------------------------


def test_a_third_region_joining_a_running_pair_backfills_then_follows(layout: Layout, tmp_path: Path) -> None:
    with layout.up(tmp_path, (EU, AP, US), active=(EU, AP)) as system:
        eu, ap, us = system.api(EU), system.api(AP), system.api(US)
        assert not system.running(US)
        add_user(system, "joiner@example.com", EU)
        auth = {EU: signin(eu, "joiner@example.com"), AP: signin(ap, "joiner@example.com")}
        books = book_ids(system)
        acknowledged: dict[str, list[tuple[str, int]]] = {}
        for i in range(10):
            region = (EU, AP)[i % 2]
            lines = [{"bookId": books[i % 4], "quantity": i + 1}]
            r = place_order(system.api(region), auth[region], f"before-join-{i}", lines)
            assert r.status_code == 201, r.text
            acknowledged[r.json()["orderId"]] = lines_of(lines)
        assert ap.post("/cart", json={"bookId": books[9], "quantity": 5}, headers=auth[AP]).status_code == 201
        converge(system, (EU, AP))

        system.start(US)
        converge(system, (EU, AP, US))
        # It copied one running region's snapshot, then followed both logs: the other's from the
        # snapshot's checkpoint of it (that region's items were in the snapshot), not from a second copy.
        backfills = wait_for(
            "a backfill", partial(metric, us, "bookstore_replication_backfills_total"), lambda n: n >= 1
        )
        assert backfills == 1
        wait_for(
            "both regions followed",
            lambda: us.get("/status").json()["replication"]["peers"],
            lambda peers: all(peers[r]["checkpoint"] is not None for r in (EU, AP)),
        )
        auth[US] = signin(us, "joiner@example.com")
        assert orders_of(us, auth[US]) == acknowledged
        assert cart_of(us, auth[US]) == {books[9]: 5}
        assert len(us.get("/books").json()) == 56
        wait_for(
            "exact best sellers in N. Virginia",
            lambda: bestsellers(us),
            lambda t: t == sold(acknowledged.values()),
        )

        # Then it follows: a new write in Ireland reaches it, and its own writes reach the others.
        lines = [{"bookId": books[11], "quantity": 4}]
        r = place_order(eu, auth[EU], "after-join", lines)
        assert r.status_code == 201, r.text
        acknowledged[r.json()["orderId"]] = lines_of(lines)
        wait_for(
            "Ireland's new order in N. Virginia", lambda: orders_of(us, auth[US]), lambda o: o == acknowledged
        )
        assert (
            us.post("/cart", json={"bookId": books[12], "quantity": 2}, headers=auth[US]).status_code == 201
        )
        for region in (EU, AP):
            wait_for(
                f"N. Virginia's cart row in {region}",
                partial(cart_of, system.api(region), auth[region]),
                lambda c: c == {books[9]: 5, books[12]: 2},
            )
        converge(system, (EU, AP, US))


# -- 7. requests between regions must be signed; a malformed batch is refused whole ---------------------


def _entry(book: dict[str, Any], key_id: str) -> dict[str, Any]:
    """A change entry, as a region pushes it, that writes `book` under the key {"id": key_id}."""
    now = int(time.time() * 1000)
    return {
        "seq": 1,
        "table": "books",
        "kind": "INSERT",
        "key": {"id": key_id},
        "old": None,
        "new": book,
        "writtenMs": now,
        "origin": EU,
        "version": [HybridLogicalClock.pack(now), EU],
        "previous": None,
    }


def test_replication_endpoints_refuse_unsigned_tampered_and_malformed_requests(
    layout: Layout, tmp_path: Path
) -> None:
    with layout.up(tmp_path) as system:
        ap = system.api(AP)
        secret = (system.data_dir / "secret").read_text().strip()
        digest = settle(system, (EU, AP))

        def post(path: str, body: bytes, headers: dict[str, str]) -> httpx.Response:
            return ap.post(path, content=body, headers={"content-type": "application/json", **headers})

        def signed(path: str, body: bytes, region: str = EU, key: str = secret) -> dict[str, str]:
            return sign(key, "POST", path, body, region, int(time.time() * 1000), AP)

        forged = {**ap.get("/books/" + book_ids(system)[0]).json(), "id": "bk-forged-1", "name": "Forged"}
        good = _entry(forged, "bk-forged-1")
        batch = orjson.dumps({"source": EU, "entries": [good]})
        follow = orjson.dumps({"peer": EU, "after": 0, "streamMs": 0})

        # No signature: 401. A signed body swapped for another: 403. The wrong secret: 403.
        for path, body in (("/replication/push", batch), ("/replication/follow", follow)):
            r = post(path, body, {})
            assert r.status_code == 401 and r.json()["error"] == "Unauthorized", r.text
        other_batch = orjson.dumps({"source": EU, "entries": [{**good, "new": {**forged, "name": "Other"}}]})
        r = post("/replication/push", other_batch, signed("/replication/push", batch))
        assert r.status_code == 403 and r.json()["error"] == "Forbidden", r.text
        other_follow = orjson.dumps({"peer": EU, "after": 5, "streamMs": 0})
        r = post("/replication/follow", other_follow, signed("/replication/follow", follow))
        assert r.status_code == 403, r.text
        r = post("/replication/push", batch, signed("/replication/push", batch, key="not-the-secret"))
        assert r.status_code == 403, r.text
        # Signed by one region, claiming to be another's batch: 403.
        r = post("/replication/push", batch, signed("/replication/push", batch, region=AP))
        assert r.status_code == 403, r.text

        # A properly signed batch with one good entry and one whose key is not its image's: 400, and
        # the good entry is not applied either.
        wrong_key = _entry({**forged, "id": "bk-forged-2"}, "bk-forged-3")
        malformed = orjson.dumps({"source": EU, "entries": [good, wrong_key]})
        r = post("/replication/push", malformed, signed("/replication/push", malformed))
        assert r.status_code == 400 and r.json()["error"] == "ValidationError", r.text

        for forged_id in ("bk-forged-1", "bk-forged-2", "bk-forged-3"):
            assert ap.get(f"/books/{forged_id}").status_code == 404
        assert state_digest(ap) == digest == state_digest(system.api(EU))

        # The same signature scheme with the good entry alone is accepted: the refusals above were about
        # the signature and the batch, not a broken endpoint.
        r = post("/replication/follow", follow, signed("/replication/follow", follow))
        assert r.status_code == 200 and orjson.loads(r.text.splitlines()[0])["headSeq"] > 0, r.text
        r = post("/replication/push", batch, signed("/replication/push", batch))
        assert r.status_code == 200 and r.json()["applied"] == 1, r.text
        assert ap.get("/books/bk-forged-1").json()["name"] == "Forged"
        assert state_digest(ap) != digest

        # Acknowledgements (what lets a region trim its log) are signed as the follower itself and
        # never beyond the log's head.
        ack = orjson.dumps({"peer": EU, "seq": 1})
        assert post("/replication/ack", ack, {}).status_code == 401
        r = post("/replication/ack", ack, signed("/replication/ack", ack, region=AP))
        assert r.status_code == 403, r.text
        beyond = orjson.dumps({"peer": EU, "seq": 10**9})
        r = post("/replication/ack", beyond, signed("/replication/ack", beyond))
        assert r.status_code == 400 and "beyond" in r.json()["message"], r.text
        r = post("/replication/ack", ack, signed("/replication/ack", ack))
        assert r.status_code == 200 and r.json() == {"peer": EU, "seq": 1}, r.text


def test_a_fast_clock_is_not_followed_contaminates_nothing_and_following_resumes(
    layout: Layout, tmp_path: Path
) -> None:
    # Within the signed requests' window (60 s ahead), so the regions still talk: the clock bound acts.
    skew_ms = 30_000
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        book = sorted(eu.get("/books").json(), key=lambda b: b["id"])[0]["id"]
        add_user(system, "clock@example.com", EU)
        eu_auth, ap_auth = signin(eu, "clock@example.com"), signin(ap, "clock@example.com")
        assert eu.post("/cart", json={"bookId": book, "quantity": 1}, headers=eu_auth).status_code == 201
        settle(system, (EU, AP))

        def peer(api: httpx.Client, region: str) -> dict[str, Any]:
            state: dict[str, Any] = api.get("/status").json()["replication"]["peers"][region]
            return state

        def quantity(api: httpx.Client, auth: dict[str, str]) -> int:
            return int(api.get(f"/cart/{book}", headers=auth).json()["quantity"])

        # The clock-skew switch: Singapore's clock runs 30 s ahead. Ireland stops following it and says so.
        system.skew_clock(AP, skew_ms)
        held = wait_for("Ireland not following Singapore", lambda: peer(eu, AP), lambda p: not p["followed"])
        assert skew_ms - 3_000 < held["notFollowed"]["offsetMs"] <= skew_ms + 500, held
        assert metric(eu, "bookstore_replication_peer_followed", peer=AP) == 0
        assert metric(eu, "bookstore_replication_peer_clock_offset_seconds", peer=AP) > 25
        # Singapore learns its clock runs ahead of Ireland's; its writes keep to Ireland's clock.
        wait_for(
            "Singapore's view of Ireland", lambda: peer(ap, EU), lambda p: (p["clockOffsetMs"] or 0) < -25_000
        )
        assert ap.put("/cart", json={"bookId": book, "quantity": 5}, headers=ap_auth).status_code == 200
        time.sleep(1.0)
        assert quantity(eu, eu_auth) == 1, "a change from the fast region was applied"
        time.sleep(0.6)
        assert eu.put("/cart", json={"bookId": book, "quantity": 2}, headers=eu_auth).status_code == 200

        # The skew removed: following resumes by itself and the later write wins in both regions.
        system.skew_clock(AP, 0)
        wait_for("Ireland following Singapore again", lambda: peer(eu, AP), lambda p: p["followed"])
        converge(system, (EU, AP))
        assert quantity(eu, eu_auth) == 2 and quantity(ap, ap_auth) == 2


def test_a_one_hour_skew_through_the_switch_contaminates_no_other_region(
    layout: Layout, tmp_path: Path
) -> None:
    # An hour is beyond the signed requests' window: the regions refuse each other's requests, and the
    # refusals carry the refusing region's clock, so each still knows how far apart the clocks are.
    hour_ms = 3_600_000
    with layout.up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        book = sorted(eu.get("/books").json(), key=lambda b: b["id"])[0]["id"]
        add_user(system, "hour@example.com", EU)
        eu_auth = signin(eu, "hour@example.com")
        signin(ap, "hour@example.com")
        assert eu.post("/cart", json={"bookId": book, "quantity": 1}, headers=eu_auth).status_code == 201
        settle(system, (EU, AP))

        def peer(api: httpx.Client, region: str) -> dict[str, Any]:
            state: dict[str, Any] = api.get("/status").json()["replication"]["peers"][region]
            return state

        system.skew_clock(AP, hour_ms)
        held = wait_for("Ireland not following Singapore", lambda: peer(eu, AP), lambda p: not p["followed"])
        assert hour_ms - 5_000 < held["notFollowed"]["offsetMs"] <= hour_ms + 1_000, held
        wait_for(
            "Singapore's view of Ireland",
            lambda: peer(ap, EU),
            lambda p: (p["clockOffsetMs"] or 0) < -hour_ms + 5_000,
        )
        # Singapore takes a write (signing in writes a session; its versions keep to Ireland's clock).
        ap_auth = signin(ap, "hour@example.com")
        assert ap.put("/cart", json={"bookId": book, "quantity": 5}, headers=ap_auth).status_code == 200
        time.sleep(0.6)
        assert eu.put("/cart", json={"bookId": book, "quantity": 2}, headers=eu_auth).status_code == 200
        assert int(eu.get(f"/cart/{book}", headers=eu_auth).json()["quantity"]) == 2

        system.skew_clock(AP, 0)
        wait_for("Ireland following Singapore again", lambda: peer(eu, AP), lambda p: p["followed"])
        converge(system, (EU, AP))
        assert int(eu.get(f"/cart/{book}", headers=eu_auth).json()["quantity"]) == 2
        assert int(ap.get(f"/cart/{book}", headers=signin(ap, "hour@example.com")).json()["quantity"]) == 2


# -- 6. three regions: each change comes from its origin, relayed by a peer only while a link is cut ----


def received_from(api: httpx.Client, source: str) -> float:
    """Changes the region took in from `source`'s stream: applied, or dropped as not newer."""
    return metric(api, "bookstore_replication_applied_total", source=source) + metric(
        api, "bookstore_replication_skipped_total", source=source
    )


def test_a_change_comes_once_from_its_origin_and_through_a_peer_only_while_its_link_is_cut(
    layout: Layout, tmp_path: Path
) -> None:
    # Anti-entropy out of the way: what reaches Virginia during the cut came through Singapore's stream.
    with layout.up(tmp_path, regions=(EU, AP, US), anti_entropy_s=3600.0) as system:
        eu, us = system.api(EU), system.api(US)
        add_user(system, "relay@example.com", EU)
        auth = signin(eu, "relay@example.com")
        books = book_ids(system)
        converge(system, (EU, AP, US))
        settle(system, (EU, AP, US))

        # With every link up, Ireland's writes reach Virginia from Ireland only: Singapore, which applied
        # them too, does not send them to Virginia a second time (in N regions, N-1 times).
        before = received_from(us, AP)
        for i, book in enumerate(books[:20]):
            assert eu.post("/cart", json={"bookId": book, "quantity": i + 1}, headers=auth).status_code == 201
        wanted = {book: i + 1 for i, book in enumerate(books[:20])}
        wait_for("Ireland's cart in Virginia", lambda: cart_of(us, auth), lambda cart: cart == wanted)
        settle(system, (EU, AP, US))
        assert received_from(us, AP) == before

        # Ireland and Virginia cut apart: Ireland's writes reach Virginia through Singapore, those written
        # at once (before Virginia knew it lost Ireland) included.
        system.cut(EU, US)
        for book in books[20:25]:
            assert eu.post("/cart", json={"bookId": book, "quantity": 7}, headers=auth).status_code == 201
            wanted[book] = 7
        wait_for(
            "Ireland's cart in Virginia through Singapore", lambda: cart_of(us, auth), lambda c: c == wanted
        )
        peers = us.get("/status").json()["replication"]["peers"]
        assert peers[AP]["relays"] == [EU] and not peers[EU]["connected"]
        assert received_from(us, AP) > before

        # Healed: Singapore stops relaying once Virginia follows Ireland again.
        system.heal(EU, US)
        wait_for(
            "Virginia following Ireland directly again",
            lambda: us.get("/status").json()["replication"]["peers"],
            lambda p: p[EU]["connected"] and p[AP]["relays"] == [],
        )
        assert eu.post("/cart", json={"bookId": books[30], "quantity": 9}, headers=auth).status_code == 201
        wanted[books[30]] = 9
        wait_for("Ireland's cart in Virginia, directly", lambda: cart_of(us, auth), lambda c: c == wanted)
        assert converge(system, (EU, AP, US))
