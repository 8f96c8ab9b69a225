"""Attacks on the SSE-S3 key commands a region runs for `bookstore s3 rotate-key` and `s3 keys`."""

from __future__ import annotations

import dataclasses

import orjson
from starlette.testclient import TestClient

from bookstore.kernel.auth import sign
from bookstore.kernel.clock import SystemClock
from bookstore.region.compose import region_app
from bookstore.region.services import RegionServices
from bookstore.replication.blog.wire import OPERATOR

SECRET = "the deployment's secret"
ROTATE, KEYS = "/replication/commands/s3/rotate-key", "/replication/commands/s3/keys"


def signed(
    method: str, path: str, body: bytes, signer: str = OPERATOR, secret: str = SECRET
) -> dict[str, str]:
    return {
        "content-type": "application/json",
        **sign(secret, method, path, body, signer, SystemClock().now_ms(), "eu-west-1"),
    }


def rotate(client: TestClient, headers: dict[str, str], body: bytes) -> tuple[int, str]:
    answer = client.post(ROTATE, content=body, headers=headers)
    return answer.status_code, str(answer.json().get("message", ""))


def test_no_one_but_the_operator_rotates_or_reads_the_keys(services: RegionServices) -> None:
    body = orjson.dumps({"reencrypt": True})
    assert services.sse_keys is not None
    with TestClient(region_app(services, SECRET), raise_server_exceptions=False) as client:
        assert rotate(client, {"content-type": "application/json"}, body)[0] == 401  # unsigned
        assert rotate(client, signed("POST", ROTATE, body, secret="a guessed secret"), body)[0] == 403
        status, message = rotate(client, signed("POST", ROTATE, body, signer="ap-southeast-1"), body)
        assert status == 403 and "only the operator" in message
        assert client.get(KEYS).status_code == 401
        assert services.sse_keys.key_status().keys == (1,)
        # The operator's own request goes through, and the region says what it holds.
        status, _ = rotate(client, signed("POST", ROTATE, body), body)
        assert status == 200
        keys = client.get(KEYS, headers=signed("GET", KEYS, b"")).json()
        assert keys["keys"][-1] == keys["newest"] == 2 and keys["region"] == "eu-west-1"


def test_malformed_rotations_get_a_400_with_a_message(services: RegionServices) -> None:
    with TestClient(region_app(services, SECRET), raise_server_exceptions=False) as client:
        for body in (b"{", b"[]", b'{"reencrypt": "yes"}', b'{"reencrypt": true, "key": "mine"}'):
            status, message = rotate(client, signed("POST", ROTATE, body), body)
            assert status == 400 and message, body
        assert services.sse_keys is not None and services.sse_keys.key_status().keys == (1,)


def test_a_region_whose_objects_are_on_s3_says_there_is_nothing_to_rotate(services: RegionServices) -> None:
    on_s3 = dataclasses.replace(services, sse_keys=None)
    body = orjson.dumps({"reencrypt": False})
    with TestClient(region_app(on_s3, SECRET), raise_server_exceptions=False) as client:
        status, message = rotate(client, signed("POST", ROTATE, body), body)
        assert status == 400 and "rotates its SSE-S3 keys itself" in message
