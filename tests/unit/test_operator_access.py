"""The deployment's credentials and the operator token's checks: files, rotation, login links, the guard."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse
from starlette.routing import Route
from starlette.testclient import TestClient

from bookstore.runtime import secret
from bookstore.runtime.operator import (
    SESSION_TTL_S,
    ControlGuard,
    OperatorAccess,
    control_hosts,
    login_code,
    login_link,
)

HOST = "127.9.0.1:7070"


@pytest.fixture(autouse=True)
def no_credentials_in_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (secret.ENV, secret.TOKEN_ENV, secret.S3_ID_ENV, secret.S3_KEY_ENV):
        monkeypatch.delenv(name, raising=False)


def test_each_data_directory_makes_its_own_credentials_in_files_only_its_owner_reads(tmp_path: Path) -> None:
    one = secret.deployment_credentials(tmp_path / "one")
    two = secret.deployment_credentials(tmp_path / "two")
    assert one.secret != two.secret and one.operator_token != two.operator_token
    assert (
        one.s3.access_key_id != two.s3.access_key_id and one.s3.secret_access_key != two.s3.secret_access_key
    )
    assert one.s3.access_key_id.startswith("AKIA") and len(one.s3.access_key_id) == 20
    for name in (secret.FILE, secret.TOKEN_FILE, secret.S3_FILE):
        mode = stat.S_IMODE((tmp_path / "one" / name).stat().st_mode)
        assert mode == 0o600, (name, oct(mode))
    # Read again, they are the same: made once, at the first start.
    assert secret.deployment_credentials(tmp_path / "one") == one
    assert sorted(p.name for p in (tmp_path / "one").iterdir()) == sorted(
        [secret.FILE, secret.TOKEN_FILE, secret.S3_FILE]
    )


def test_a_client_pointed_at_another_directory_is_told_so_and_nothing_is_made(tmp_path: Path) -> None:
    with pytest.raises(secret.MissingCredential, match="--data-dir"):
        secret.operator_token(tmp_path)
    with pytest.raises(secret.MissingCredential, match="--data-dir"):
        secret.s3_credentials(tmp_path, create=False)
    assert list(tmp_path.iterdir()) == []


def test_the_environment_overrides_the_files_as_the_supervisor_hands_them_down(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    made = secret.deployment_credentials(tmp_path)
    handed = secret.Credentials.generate()
    assert secret.from_env({}) is None
    for name, value in handed.env().items():
        monkeypatch.setenv(name, value)
    assert secret.from_env() == handed
    assert secret.deployment_credentials(tmp_path) == handed != made


def test_rotation_replaces_only_what_it_names_and_keeps_the_files_private(tmp_path: Path) -> None:
    before = secret.deployment_credentials(tmp_path)
    assert secret.rotate(tmp_path, ["operator-token"]) == [secret.TOKEN_FILE]
    after = secret.deployment_credentials(tmp_path)
    assert after.operator_token != before.operator_token
    assert (after.secret, after.s3) == (before.secret, before.s3)
    assert secret.rotate(tmp_path) == [secret.S3_FILE, secret.FILE, secret.TOKEN_FILE]
    again = secret.deployment_credentials(tmp_path)
    assert (
        again.secret != after.secret and again.s3 != after.s3 and again.operator_token != after.operator_token
    )
    for name in (secret.FILE, secret.TOKEN_FILE, secret.S3_FILE):
        assert stat.S_IMODE((tmp_path / name).stat().st_mode) == 0o600
    assert not [p for p in tmp_path.iterdir() if p.name.endswith(".tmp")]
    with pytest.raises(ValueError, match="unknown"):
        secret.rotate(tmp_path, ["everything"])


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def test_a_login_link_is_redeemed_once_for_a_session_that_expires() -> None:
    clock = Clock()
    access = OperatorAccess("the-operator-token", clock)
    link = login_link("http://127.0.0.1:8080", "the-operator-token", clock.now)
    assert link.startswith("http://127.0.0.1:8080/edge/ui/#login=login.")
    code = link.split("#login=", 1)[1]
    redeemed = access.redeem(code)
    assert redeemed is not None
    session, expires = redeemed
    assert expires == int(clock.now + SESSION_TTL_S)
    assert access.allows(session) and access.allows("the-operator-token")
    assert access.redeem(code) is None  # once
    clock.now = expires + 1
    assert not access.allows(session)
    assert access.allows("the-operator-token")


def test_forged_expired_and_foreign_codes_and_sessions_are_refused() -> None:
    clock = Clock()
    access = OperatorAccess("the-operator-token", clock)
    expired = login_code("the-operator-token", clock.now - 7200)
    foreign = login_code("another-deployments-token", clock.now)
    tampered = login_code("the-operator-token", clock.now).replace("login.", "login.9", 1)
    for code in (expired, foreign, tampered, "", "login", "session.1.2.3", "x" * 5000):
        assert access.redeem(code) is None, code
    session, _ = OperatorAccess("another-deployments-token", clock).redeem(foreign) or ("", 0)
    assert session and not access.allows(session)
    for credential in (None, "", "the-operator-toke", "the-operator-token ", foreign):
        assert not access.allows(credential), credential
    # A rotated token voids every session made under the old one.
    mine, _ = access.redeem(login_code("the-operator-token", clock.now)) or ("", 0)
    assert mine and not OperatorAccess("a-rotated-token", clock).allows(mine)


def guarded() -> TestClient:
    async def act(_: Request) -> JSONResponse:
        return JSONResponse({"done": True})

    app = Starlette(routes=[Route("/regions", act, methods=["GET"]), Route("/act", act, methods=["POST"])])
    return TestClient(ControlGuard(app, "the-operator-token", control_hosts("127.9.0.1", 7070)))


def test_the_control_guard_takes_the_token_from_tools_and_nothing_from_browsers() -> None:
    client = guarded()
    token = {"authorization": "Bearer the-operator-token", "host": HOST}
    assert client.get("/regions", headers=token).json() == {"done": True}
    assert (
        client.post("/act", headers={**token, "content-type": "application/json"}, content=b"{}").status_code
        == 200
    )
    assert client.get("/regions", headers={**token, "host": "localhost:7070"}).status_code == 200
    refusals = [
        ({"host": HOST}, 401),
        ({**token, "authorization": "Bearer guess"}, 401),
        ({**token, "authorization": "the-operator-token"}, 401),
        ({**token, "host": "rebound.example:7070"}, 400),
        ({**token, "host": "127.9.0.1"}, 400),
        ({**token, "origin": "http://127.9.0.1:7070"}, 403),
        ({**token, "origin": "null"}, 403),
        ({**token, "sec-fetch-site": "same-origin"}, 403),
        ({**token, "sec-fetch-mode": "no-cors"}, 403),
    ]
    for headers, status in refusals:
        answer = client.get("/regions", headers=headers)
        assert answer.status_code == status, (headers, answer.text)
        assert set(answer.json()) == {"error", "message"}
    for content_type in ("text/plain", "application/x-www-form-urlencoded", "multipart/form-data", None):
        headers = {**token, "content-type": content_type} if content_type else token
        answer = client.post("/act", headers=headers, content=b'{"cut": true}')
        assert answer.status_code == 415, content_type
