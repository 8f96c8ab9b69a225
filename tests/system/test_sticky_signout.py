"""Sign-out sticks in every region, across a partition; spent refresh tokens revoke (issue 12 item 3)."""

from __future__ import annotations

from pathlib import Path

import httpx
import pytest

from tests.support.regions import system_up
from tests.system.test_replication import AP, EU, PASSWORD, add_user, converge, signin

pytestmark = pytest.mark.system


def sign_in_tokens(api: httpx.Client, email: str) -> dict[str, str]:
    r = api.post("/auth/signin", json={"email": email, "password": PASSWORD})
    assert r.status_code == 200, r.text
    tokens: dict[str, str] = r.json()
    return tokens


def refresh(api: httpx.Client, token: str) -> httpx.Response:
    return api.post("/auth/refresh", json={"refreshToken": token})


def test_a_signout_across_a_partition_sticks_in_every_region_after_the_heal(tmp_path: Path) -> None:
    with system_up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "sticky@example.com", EU)
        signin(eu, "sticky@example.com")
        signin(ap, "sticky@example.com")  # both regions hold the user and both signing keys
        converge(system, (EU, AP))

        system.cli("link", "cut", EU, AP)
        tokens = sign_in_tokens(eu, "sticky@example.com")  # this session exists only in Ireland
        out = ap.post("/auth/signout", headers={"Authorization": f"Bearer {tokens['accessToken']}"})
        assert out.status_code == 200 and out.json() == {"signedOut": True}, out.text
        # Ireland has not heard of the sign-out yet: its refresh works (and rotates the token).
        during = refresh(eu, tokens["refreshToken"])
        assert during.status_code == 200, during.text

        system.cli("link", "heal", EU, AP)
        converge(system, (EU, AP))
        for api in (eu, ap):
            for token in (tokens["refreshToken"], during.json()["refreshToken"]):
                r = refresh(api, token)
                assert r.status_code == 401, (api.base_url, r.text)
        # The rotated session's later writes did not undo the revocation anywhere.
        r = refresh(eu, during.json()["refreshToken"])
        assert r.status_code == 401 and "signed out" in r.json()["message"], r.text


def test_a_spent_refresh_token_presented_in_another_region_revokes_the_session(tmp_path: Path) -> None:
    with system_up(tmp_path) as system:
        eu, ap = system.api(EU), system.api(AP)
        add_user(system, "reuse@example.com", EU)
        signin(eu, "reuse@example.com")
        tokens = sign_in_tokens(eu, "reuse@example.com")
        rotated = refresh(eu, tokens["refreshToken"])
        assert rotated.status_code == 200 and rotated.json()["refreshToken"] != tokens["refreshToken"]
        converge(system, (EU, AP))

        # The spent token comes back, in Singapore: reuse, so the whole session is revoked.
        reused = refresh(ap, tokens["refreshToken"])
        assert reused.status_code == 401 and "used before" in reused.json()["message"], reused.text
        converge(system, (EU, AP))
        for api in (eu, ap):
            r = refresh(api, rotated.json()["refreshToken"])
            assert r.status_code == 401 and "signed out" in r.json()["message"], r.text
