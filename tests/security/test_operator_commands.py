"""Attacks on the operator commands a region runs for the command line (/replication/commands/)."""

from __future__ import annotations

import orjson
from starlette.testclient import TestClient

from bookstore.kernel.auth import sign
from bookstore.kernel.clock import SystemClock
from bookstore.region.compose import region_app
from bookstore.region.services import RegionServices
from bookstore.replication.blog.wire import OPERATOR

SECRET = "the deployment's secret"
PATH = "/replication/commands/users"
NEW_USER = orjson.dumps(
    {"email": "intruder@example.com", "password": "a long enough password", "role": "author"}
)


def post(client: TestClient, headers: dict[str, str], body: bytes = NEW_USER) -> tuple[int, str]:
    answer = client.post(PATH, content=body, headers={"content-type": "application/json", **headers})
    return answer.status_code, str(answer.json().get("message", ""))


def signed(secret: str, signer: str, body: bytes = NEW_USER) -> dict[str, str]:
    return sign(secret, "POST", PATH, body, signer, SystemClock().now_ms(), "eu-west-1")


def test_no_one_but_the_operator_adds_a_user(services: RegionServices) -> None:
    with TestClient(region_app(services, SECRET), raise_server_exceptions=False) as client:
        assert post(client, {})[0] == 401  # unsigned
        assert post(client, signed("a guessed secret", OPERATOR))[0] == 403  # wrong secret
        # Signed for another body: the signature covers the body's hash.
        tampered = orjson.dumps({"email": "other@example.com", "password": "a long enough password"})
        assert post(client, signed(SECRET, OPERATOR, tampered))[0] == 403
        # A peer region holds the secret, but commands are the operator's alone.
        status, message = post(client, signed(SECRET, "ap-southeast-1"))
        assert status == 403 and "only the operator" in message
        assert not services.tables["users"].get({"email": "intruder@example.com"})
        # The operator's own request goes through.
        assert post(client, signed(SECRET, OPERATOR))[0] == 200
        assert services.tables["users"].get({"email": "intruder@example.com"})


def test_without_a_deployment_secret_the_commands_do_not_exist(services: RegionServices) -> None:
    with TestClient(region_app(services), raise_server_exceptions=False) as client:
        assert post(client, {})[0] == 404


def test_malformed_commands_get_a_4xx_with_a_message(services: RegionServices) -> None:
    with TestClient(region_app(services, SECRET), raise_server_exceptions=False) as client:
        for body in (b"{", b"[]", b'{"email": 5, "password": "x"}', b'{"email": "a@b.c"}'):
            status, message = post(client, signed(SECRET, OPERATOR, body), body)
            assert status == 400 and message, body
        weak = orjson.dumps({"email": "weak@example.com", "password": "short"})
        assert post(client, signed(SECRET, OPERATOR, weak), weak)[0] == 400
        taken = orjson.dumps({"email": "twice@example.com", "password": "a long enough password"})
        assert post(client, signed(SECRET, OPERATOR, taken), taken)[0] == 200
        assert post(client, signed(SECRET, OPERATOR, taken), taken)[0] == 409
