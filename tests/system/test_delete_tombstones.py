"""A delete always leaves a tombstone: a checkout empties the cart everywhere (issue 12 item 1)."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

from tests.support.regions import system_up
from tests.system.test_replication import (
    AP,
    EU,
    add_user,
    book_ids,
    cart_of,
    converge,
    orders_of,
    place_order,
    signin,
)

pytestmark = pytest.mark.system


def test_a_checkout_elsewhere_removes_a_cart_row_written_behind_a_partition(tmp_path: Path) -> None:
    with system_up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "tombstone@example.com", EU)
        auth = {EU: signin(eu, "tombstone@example.com"), AP: signin(ap, "tombstone@example.com")}
        book = book_ids(system)[0]
        converge(system, (EU, AP))

        system.cli("link", "cut", EU, AP)
        added = eu.post("/cart", json={"bookId": book, "quantity": 2}, headers=auth[EU])
        assert added.status_code == 201, added.text
        time.sleep(0.05)  # Singapore's checkout is later by the clock as well
        # Singapore has no cart row yet: its checkout deletes an absent key.
        order = place_order(ap, auth[AP], "checkout-1", [{"bookId": book, "quantity": 2}])
        assert order.status_code == 201, order.text
        assert cart_of(ap, auth[AP]) == {} and cart_of(eu, auth[EU]) == {book: 2}

        system.cli("link", "heal", EU, AP)
        converge(system, (EU, AP))
        for region in (EU, AP):
            api = system.api(region)
            # The cart row lost to the checkout's later tombstone; the order is kept.
            assert cart_of(api, auth[region]) == {}, region
            assert orders_of(api, auth[region]) == {order.json()["orderId"]: [(book, 2)]}
