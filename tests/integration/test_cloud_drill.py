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


class _Stacks:
    """A Deployer's status as `bookstore aws status` shows it, without AWS."""

    def __init__(self, outputs: dict[tuple[str, str], dict[str, str]]) -> None:
        from bookstore.cloud.settings import CloudSettings

        self.settings = CloudSettings(("eu-west-1", "us-east-1"), "eu-west-1", "shop.example.com", "Z1")
        self.rows = outputs

    def status(self) -> list[dict[str, Any]]:
        return [{"stack": s, "region": r, "status": "x", "outputs": o} for (s, r), o in self.rows.items()]


def test_the_drill_reaches_cloudfront_and_each_regions_execute_api_host() -> None:
    from typing import cast

    from bookstore.cloud.deploy import Deployer
    from bookstore.cloud.drill import deployed
    from bookstore.domain.errors import StorageError

    outputs = {
        ("bookstore-global", "eu-west-1"): {"StackRegion": "eu-west-1"},
        ("bookstore-region", "eu-west-1"): {"ApiHost": "a1.execute-api.eu-west-1.amazonaws.com"},
        ("bookstore-region", "us-east-1"): {"ApiHost": "b2.execute-api.us-east-1.amazonaws.com"},
        ("bookstore-edge", "eu-west-1"): {"DistributionDomainName": "d3.cloudfront.net"},
    }
    found = deployed(cast(Deployer, _Stacks(outputs)))
    assert found.public_url == "https://d3.cloudfront.net"
    assert found.regions == {
        "eu-west-1": "https://a1.execute-api.eu-west-1.amazonaws.com",
        "us-east-1": "https://b2.execute-api.us-east-1.amazonaws.com",
    }
    outputs[("bookstore-edge", "eu-west-1")] = {}
    with pytest.raises(StorageError, match="not deployed: bookstore-edge in eu-west-1"):
        deployed(cast(Deployer, _Stacks(outputs)))


def test_the_drills_shoppers_are_confirmed_accounts_in_the_users_table(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from bookstore.cloud.drill import add_users

    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():
        dynamodb = boto3.client("dynamodb", region_name=REGION)
        dynamodb.create_table(
            TableName="bookstore-users",
            KeySchema=[{"AttributeName": "email", "KeyType": "HASH"}],
            AttributeDefinitions=[{"AttributeName": "email", "AttributeType": "S"}],
            BillingMode="PAY_PER_REQUEST",
        )
        add = add_users(dynamodb, boto3.client("dynamodbstreams", region_name=REGION), "bookstore-", REGION)
        ids = add(["drill-1@example.com", "drill-2@example.com"], "drill shopper password")
        item = dynamodb.get_item(TableName="bookstore-users", Key={"email": {"S": "drill-1@example.com"}})
    assert len(set(ids)) == 2
    assert item["Item"]["confirmed"] == {"BOOL": True} and item["Item"]["userId"] == {"S": ids[0]}
    assert item["Item"]["passwordHash"]["S"].startswith("$argon2")
