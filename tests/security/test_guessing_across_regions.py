"""Guessing spread over regions and behind the edge is counted as one (issue 13 item 6)."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from bookstore.services.identity import CODE_TRIES, SIGNIN_PER_ACCOUNT_AND_CLIENT, SIGNIN_PER_CLIENT
from tests.support.regions import System, loopback_network, system_up
from tests.system.test_replication import AP, EU, PASSWORD, add_user, converge

pytestmark = pytest.mark.system


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("guessing"), edge="") as running:
        yield running


def confirm(api: httpx.Client, email: str, code: str) -> tuple[int, str]:
    r = api.post("/auth/confirm", json={"email": email, "code": code})
    return r.status_code, r.json().get("message", "")


def wrong(code: str, n: int) -> str:
    return f"{(int(code) + 1 + n) % 1_000_000:06d}"


def test_wrong_codes_count_in_every_region(system: System) -> None:
    eu, ap = system.api(EU), system.api(AP)
    email = "codes@example.com"
    assert eu.post("/auth/signup", json={"email": email, "password": PASSWORD}).status_code == 201
    code = system.cli("users", "confirm-code", email, "--data-dir", str(system.data_dir)).stdout.strip()
    converge(system, (EU, AP))
    for n in range(CODE_TRIES.most - 1):
        assert confirm(eu, email, wrong(code, n))[0] == 400
    converge(system, (EU, AP))
    # Singapore counts Ireland's wrong tries: one more there, and the code is void in both regions.
    status, message = confirm(ap, email, wrong(code, 99))
    assert status == 400 and "wrong confirmation code" in message
    status, message = confirm(ap, email, code)
    assert status == 400 and "void" in message
    converge(system, (EU, AP))
    status, message = confirm(eu, email, code)
    assert status == 400 and "void" in message


def test_failed_sign_ins_count_in_every_region(system: System) -> None:
    eu, ap = system.api(EU), system.api(AP)
    email = "throttled@example.com"
    add_user(system, email, EU)
    converge(system, (EU, AP))
    # Both regions see this test's connections come from one address, so (account, address) is counted.
    half = SIGNIN_PER_ACCOUNT_AND_CLIENT.most // 2
    for api, tries in ((eu, half), (ap, SIGNIN_PER_ACCOUNT_AND_CLIENT.most - half)):
        for n in range(tries):
            r = api.post("/auth/signin", json={"email": email, "password": f"guess-{n}"})
            assert r.status_code == 401, r.text
        converge(system, (EU, AP))
    for api in (eu, ap):
        r = api.post("/auth/signin", json={"email": email, "password": PASSWORD})
        assert r.status_code == 429 and 1 <= int(r.headers["retry-after"]) <= 900, r.text


def test_behind_the_edge_each_client_address_is_counted_and_forged_ones_are_not_believed(
    system: System,
) -> None:
    # Two shoppers on addresses of their own (loopback), both through the edge: the region sees the
    # edge as its peer, so only the address the edge vouches for tells them apart.
    network = loopback_network()
    attacker, shopper = (
        httpx.Client(
            base_url=system.topology.edge.url,
            transport=httpx.HTTPTransport(local_address=f"127.{network}.251.{n}"),
            timeout=30,
        )
        for n in (7, 8)
    )
    with attacker, shopper:
        for n in range(SIGNIN_PER_CLIENT.most):
            forged = {"X-Forwarded-For": f"10.0.0.{n}", "X-Bookstore-Client": f"10.0.1.{n};{'0' * 64}"}
            r = attacker.post(
                "/api/auth/signin",
                json={"email": f"target{n // 3}@example.com", "password": "guess"},
                headers=forged,
            )
            assert r.status_code == 401, (n, r.text)
        r = attacker.post("/api/auth/signin", json={"email": "another@example.com", "password": "guess"})
        assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text
        r = shopper.post("/api/auth/signin", json={"email": "another@example.com", "password": "guess"})
        assert r.status_code == 401, r.text
