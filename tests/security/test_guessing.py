"""Guessing attacks on sign-up, confirmation and sign-in, against one region's API (issue 13 item 6)."""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import TypeVar

import pytest
from starlette.testclient import TestClient

from bookstore.api.client_address import vouch
from bookstore.config import Topology
from bookstore.kernel.clock import SkewedClock, SystemClock
from bookstore.region.compose import build_region, region_app
from bookstore.region.services import RegionServices
from bookstore.services.identity import (
    CODE_TRIES,
    CODE_TTL_MS,
    RESENDS,
    SIGNIN_PER_ACCOUNT,
    SIGNIN_PER_ACCOUNT_AND_CLIENT,
    SIGNIN_PER_CLIENT,
)

PASSWORD = "correct horse battery"
SECRET = "the-deployments-secret"
EMAIL = "victim@example.com"


class Region:
    def __init__(self, services: RegionServices, client: TestClient, clock: SkewedClock) -> None:
        self.services, self.client, self.clock = services, client, clock

    def advance(self, seconds: int) -> None:
        self.clock.offset_ms += seconds * 1000

    def code(self, email: str = EMAIL) -> str:
        return self.services.identity.confirmation_code(email)


@pytest.fixture
def region(tmp_path: Path) -> Iterator[Region]:
    clock = SkewedClock(SystemClock())
    services = build_region(Topology(), "eu-west-1", tmp_path, clock=clock)
    try:
        with TestClient(region_app(services, SECRET), raise_server_exceptions=False) as client:
            yield Region(services, client, clock)
    finally:
        services.close()


def wrong(code: str, n: int) -> str:
    return f"{(int(code) + 1 + n) % 1_000_000:06d}"


def confirm(region: Region, code: str, email: str = EMAIL) -> tuple[int, str]:
    r = region.client.post("/auth/confirm", json={"email": email, "code": code})
    return r.status_code, r.json().get("message", "")


def signin(region: Region, email: str, password: str, headers: dict[str, str] | None = None) -> int:
    r = region.client.post("/auth/signin", json={"email": email, "password": password}, headers=headers)
    if r.status_code == 429:
        retry_after = int(r.headers["retry-after"])
        assert 1 <= retry_after <= 900 and r.json()["error"] == "TooManyRequests", r.headers
    status: int = r.status_code  # TestClient.post is untyped (Any) in starlette's annotations
    return status


def test_300_wrong_codes_void_the_code_and_the_right_one_is_refused(region: Region) -> None:
    assert region.client.post("/auth/signup", json={"email": EMAIL, "password": PASSWORD}).status_code == 201
    code = region.code()
    answers = [confirm(region, wrong(code, n)) for n in range(300)]
    assert all(status == 400 for status, _ in answers)
    assert all("wrong confirmation code" in m for _, m in answers[: CODE_TRIES.most])
    assert all("void" in m for _, m in answers[CODE_TRIES.most :])
    # The right code, once the code is void, confirms nothing.
    status, message = confirm(region, code)
    assert status == 400 and "void" in message and "resend-code" in message
    assert region.client.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD}).status_code == 403

    # A new code can be asked for (the answer is the same for an unknown email), and it confirms.
    for email in (EMAIL, "nobody@example.com"):
        r = region.client.post("/auth/resend-code", json={"email": email})
        assert r.status_code == 202 and r.json()["email"] == email
    # The new code has tries of its own (it may equal the old by chance, 1 in a million).
    assert confirm(region, region.code()) == (200, "")
    assert region.client.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD}).status_code == 200


def test_asking_for_new_codes_is_throttled(region: Region) -> None:
    region.client.post("/auth/signup", json={"email": EMAIL, "password": PASSWORD})
    for _ in range(RESENDS.most):
        assert region.client.post("/auth/resend-code", json={"email": EMAIL}).status_code == 202
    r = region.client.post("/auth/resend-code", json={"email": EMAIL})
    assert r.status_code == 429 and int(r.headers["retry-after"]) >= 1, r.text


def test_a_code_expires_after_24_hours(region: Region) -> None:
    region.client.post("/auth/signup", json={"email": EMAIL, "password": PASSWORD})
    code = region.code()
    region.advance(24 * 3600 + 1)
    status, message = confirm(region, code)
    assert status == 400 and "expired" in message
    region.client.post("/auth/resend-code", json={"email": EMAIL})
    assert confirm(region, region.code()) == (200, "")


def test_an_unknown_email_and_a_confirmed_account_are_answered_as_a_wrong_code(region: Region) -> None:
    region.client.post("/auth/signup", json={"email": EMAIL, "password": PASSWORD})
    code = region.code()
    region.services.identity.add_user("confirmed@example.com", PASSWORD)
    expected = confirm(region, wrong(code, 0))
    assert expected[0] == 400
    assert confirm(region, wrong(code, 0), "nobody@example.com") == expected
    assert confirm(region, wrong(code, 0), "confirmed@example.com") == expected
    # The right code sent twice (a retry) confirms, then answers alike.
    assert confirm(region, code) == confirm(region, code) == (200, "")


def test_signup_answers_alike_whether_or_not_the_email_has_an_account(region: Region) -> None:
    region.services.identity.add_user(EMAIL, PASSWORD)
    existing = region.client.post("/auth/signup", json={"email": EMAIL, "password": "an attacker's guess"})
    new = region.client.post("/auth/signup", json={"email": "new@example.com", "password": PASSWORD})
    assert (existing.status_code, existing.json()) == (new.status_code, new.json() | {"email": EMAIL})
    assert set(existing.headers) == set(new.headers)
    # The existing account is untouched: its password still signs in.
    assert region.client.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD}).status_code == 200


def test_signin_is_throttled_per_account_with_429_and_retry_after(region: Region) -> None:
    region.services.identity.add_user(EMAIL, PASSWORD)
    most = SIGNIN_PER_ACCOUNT_AND_CLIENT.most
    statuses = [signin(region, EMAIL, f"guess-{n:04d}") for n in range(most + 5)]
    assert statuses == [401] * most + [429] * 5
    # Even the right password is refused while throttled: no password is checked (no argon2 work).
    assert signin(region, EMAIL, PASSWORD) == 429
    # An unknown email is throttled the same way, so the throttle does not reveal accounts either.
    unknown = [signin(region, "nobody@example.com", "guess") for _ in range(most + 1)]
    assert unknown[-1] == 429
    region.advance(SIGNIN_PER_ACCOUNT_AND_CLIENT.window_s)
    assert signin(region, EMAIL, PASSWORD) == 200


def test_signin_is_throttled_per_client_address_and_forged_addresses_do_not_escape(region: Region) -> None:
    # Few tries per account (under that limit), many accounts: the client's address is what is counted.
    # Each try forges another X-Forwarded-For and an X-Bookstore-Client with a wrong HMAC.
    tries = 0
    while tries < SIGNIN_PER_CLIENT.most:
        forged = {"X-Forwarded-For": f"10.0.0.{tries}", "X-Bookstore-Client": f"10.0.1.{tries};{'0' * 64}"}
        assert signin(region, f"user{tries // 3}@example.com", "guess", forged) == 401
        tries += 1
    assert signin(region, "someone-else@example.com", "guess", {"X-Forwarded-For": "10.9.9.9"}) == 429
    # Another client, as the edge vouches for it (HMAC with the deployment secret), is not throttled.
    other = {"X-Bookstore-Client": vouch(SECRET, "127.104.9.9").decode()}
    assert signin(region, "someone-else@example.com", "guess", other) == 401


def vouched(address: str) -> dict[str, str]:
    """Headers of a request the edge forwards for a client at `address`."""
    return {"X-Bookstore-Client": vouch(SECRET, address).decode()}


def test_an_attackers_failures_do_not_stop_the_owner_signing_in_from_another_address(region: Region) -> None:
    region.services.identity.add_user(EMAIL, PASSWORD)
    attacker, owner = vouched("127.66.6.6"), vouched("127.77.7.7")
    tries = [
        signin(region, EMAIL, f"guess-{n}", attacker) for n in range(SIGNIN_PER_ACCOUNT_AND_CLIENT.most + 3)
    ]
    assert tries == [401] * SIGNIN_PER_ACCOUNT_AND_CLIENT.most + [429] * 3
    # The attacker's address stays locked out of this account, the right password included...
    assert signin(region, EMAIL, PASSWORD, attacker) == 429
    # ...while the owner, from an address that has not failed, signs in.
    assert signin(region, EMAIL, PASSWORD, owner) == 200


def test_failures_spread_over_many_addresses_reach_the_accounts_ceiling(region: Region) -> None:
    region.services.identity.add_user(EMAIL, PASSWORD)
    per_address = SIGNIN_PER_ACCOUNT_AND_CLIENT.most
    addresses = -(-SIGNIN_PER_ACCOUNT.most // per_address)
    failed = 0
    for a in range(addresses):
        for n in range(per_address):
            if failed < SIGNIN_PER_ACCOUNT.most:
                assert signin(region, EMAIL, f"guess-{a}-{n}", vouched(f"127.66.{a}.1")) == 401
                failed += 1
    # At the ceiling, a fresh address is throttled too (the right password included), until the window ends.
    assert signin(region, EMAIL, PASSWORD, vouched("127.77.7.7")) == 429
    region.advance(SIGNIN_PER_ACCOUNT.window_s)
    assert signin(region, EMAIL, PASSWORD, vouched("127.77.7.7")) == 200


T = TypeVar("T")


def at_once(n: int, call: Callable[[int], T]) -> list[T]:
    """`call(i)` for i in 0..n-1, from n threads released together."""
    start = threading.Barrier(n)

    def run(i: int) -> T:
        start.wait()
        return call(i)

    with ThreadPoolExecutor(max_workers=n) as pool:
        return list(pool.map(run, range(n)))


def test_concurrent_sign_ins_do_not_pass_the_limit_by_the_number_in_flight(region: Region) -> None:
    region.services.identity.add_user(EMAIL, PASSWORD)
    most = SIGNIN_PER_ACCOUNT_AND_CLIENT.most
    attacker = vouched("127.66.6.6")
    statuses = at_once(most + 8, lambda n: signin(region, EMAIL, f"guess-{n}", attacker))
    # Exactly `most` guesses were checked (each an argon2 hash); the rest were refused before hashing.
    assert sorted(statuses) == [401] * most + [429] * 8
    assert signin(region, EMAIL, PASSWORD, attacker) == 429
    # A right password gives its reservation back: signing in more often than the limit counts nothing.
    # (Right passwords in flight at once do count while they are checked, as any attempt does.)
    owner = vouched("127.77.7.7")
    assert [signin(region, EMAIL, PASSWORD, owner) for _ in range(most + 2)] == [200] * (most + 2)
    assert signin(region, EMAIL, "one more guess", owner) == 401


def test_concurrent_wrong_codes_do_not_pass_the_code_tries(region: Region) -> None:
    region.client.post("/auth/signup", json={"email": EMAIL, "password": PASSWORD})
    code = region.code()
    answers = at_once(40, lambda n: confirm(region, wrong(code, n)))
    assert all(status == 400 for status, _ in answers)
    assert sum("wrong confirmation code" in message for _, message in answers) == CODE_TRIES.most
    assert confirm(region, code)[0] == 400


def test_a_guessing_attack_over_days_leaves_only_the_live_windows_in_the_table(region: Region) -> None:
    """Every kind of attempt (sign-in, confirmation code, new code), for new emails each day."""
    table = region.services.tables["attempts"]
    replica = region.services.replica
    assert replica is not None
    rows, stored = [], []
    for day in range(6):
        for n in range(10):
            email = f"day{day}-{n}@example.com"
            assert region.client.post("/auth/resend-code", json={"email": email}).status_code == 202
            assert confirm(region, "123456", email)[0] == 400
        for n in range(2):
            assert signin(region, f"day{day}-{n}@example.com", "guess", vouched(f"127.66.{day}.{n}")) == 401
        rows.append(len(table.scan(limit=1000).items))
        # The removals are replicated deletes: tombstones, which the replicator trims once every peer
        # has them (here there is no peer) and they are older than the retention.
        replica.trim((), 0, region.clock.now_ms())
        stored.append(len(replica.snapshot(None, 1000, ["attempts"]).entries))
        region.advance(CODE_TTL_MS // 1000 + 1)
    # Each day's attempts removed the expired rows of the day before: the table holds one day's worth.
    one_day = rows[0]
    assert rows == [one_day] * 6, rows
    assert one_day == 10 * 2 + 2 * 3
    assert max(stored) <= 2 * one_day, stored
