"""`bookstore aws drill`'s break and repair (bookstore.cloud.drill) against moto's Lambda: the flag set
on the function's environment and removed, every other variable kept, repaired when the drill fails."""

from __future__ import annotations

import io
import zipfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bookstore.cloud.drill import LambdaBreaker, repaired
from tests.support.aws import fake_credentials

REGION = "eu-west-1"
VARIABLES = {"BOOKSTORE_REGION": REGION, "BOOKSTORE_HOME_REGION": REGION}


def _package() -> bytes:
    data = io.BytesIO()
    with zipfile.ZipFile(data, "w") as archive:
        archive.writestr("handler.py", "def handler(event, context):\n    return {}\n")
    return data.getvalue()


@pytest.fixture
def function(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Any]:
    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():
        iam = boto3.client("iam", region_name=REGION)
        role = iam.create_role(
            RoleName="bookstore-api",
            AssumeRolePolicyDocument='{"Version": "2012-10-17", "Statement": []}',
        )["Role"]["Arn"]
        client = boto3.client("lambda", region_name=REGION)
        client.create_function(
            FunctionName="bookstore-region-ApiFunction",
            Runtime="python3.11",
            Role=role,
            Handler="handler.handler",
            Code={"ZipFile": _package()},
            Environment={"Variables": VARIABLES},
        )
        yield client


def test_break_sets_the_flag_and_repair_removes_it_keeping_the_other_variables(function: Any) -> None:
    said: list[str] = []
    breaker = LambdaBreaker(function, "bookstore-region-ApiFunction", said.append, sleep=lambda _: None)
    breaker.break_api()
    assert breaker.variables() == {**VARIABLES, "BOOKSTORE_API_BROKEN": "1"}
    assert breaker.is_broken()
    assert breaker.repair() is True
    assert breaker.variables() == VARIABLES
    # Idempotent: a second repair (the `finally` after the drill's own) changes nothing.
    assert breaker.repair() is False
    assert breaker.variables() == VARIABLES
    assert said == [
        "break: BOOKSTORE_API_BROKEN=1 on bookstore-region-ApiFunction",
        "repair: BOOKSTORE_API_BROKEN removed from bookstore-region-ApiFunction",
    ]


def test_the_api_is_repaired_when_the_workload_raises(function: Any) -> None:
    breaker = LambdaBreaker(function, "bookstore-region-ApiFunction", sleep=lambda _: None)
    with pytest.raises(RuntimeError, match="the workload failed"), repaired(breaker):
        breaker.break_api()
        assert breaker.is_broken()
        raise RuntimeError("the workload failed")
    assert not breaker.is_broken()
    assert breaker.variables() == VARIABLES
