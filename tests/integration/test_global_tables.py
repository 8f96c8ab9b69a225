"""`bookstore aws make-global` / `describe-global`: DynamoDB Global Tables, under moto as far as it goes.

What moto (5.2.5) does not implement, and so what these tests cannot show: moto accepts UpdateTable with
ReplicaUpdates but ignores it. It answers with no `Replicas`, lists none in DescribeTable afterwards and
never copies an item to another region. So no test here sees a replica become ACTIVE, nor the skipping
of regions that already hold one; instead they pin what we can observe: the exact requests sent (one
replica per UpdateTable, the stream enabled in a call of its own first), the refusals made before asking
anything, and the clear error make_global gives when an endpoint drops the replica request, as moto does.
When moto learns global tables, `test_replica_request_as_far_as_moto_goes` fails and should become the
full check: both regions ACTIVE in describe_global, an idempotent second call, an item visible in both.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import botocore.config
import pytest
from moto import mock_aws
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from bookstore.cli import app
from bookstore.config import Storage, Topology
from bookstore.domain.errors import StorageError, ValidationError
from bookstore.region.compose import build_region
from bookstore.storage.dynamodb.global_tables import describe_global, make_global
from tests.support.aws import fake_credentials

IRELAND, SINGAPORE = "eu-west-1", "ap-southeast-1"
TOPOLOGY = Topology(storage=Storage(tables="dynamodb"))
NOT_GLOBAL_HERE = "does not implement DynamoDB global tables"


@pytest.fixture
def aws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():
        yield


def client_for(region: str) -> Any:
    config = botocore.config.Config(account_id_endpoint_mode="disabled")
    return boto3.session.Session(region_name=region).client("dynamodb", config=config)


def bootstrap(tmp_path: Path, region: str, topology: Topology = TOPOLOGY) -> None:
    """Create the region's tables the way a region process does on the dynamodb backend."""
    build_region(topology, region, tmp_path / "data").close()


def record_updates(client: Any) -> list[dict[str, Any]]:
    """Every UpdateTable request `client` sends, as its parameters (the real client, only observed)."""
    sent: list[dict[str, Any]] = []

    def keep(params: dict[str, Any], **_: Any) -> None:
        sent.append(json.loads(json.dumps(params)))

    client.meta.events.register("provide-client-params.dynamodb.UpdateTable", keep)
    return sent


def create_plain_table(client: Any, name: str, stream: dict[str, Any] | None = None) -> None:
    request: dict[str, Any] = {
        "TableName": name,
        "KeySchema": [{"AttributeName": "id", "KeyType": "HASH"}],
        "AttributeDefinitions": [{"AttributeName": "id", "AttributeType": "S"}],
        "BillingMode": "PAY_PER_REQUEST",
    }
    if stream is not None:
        request["StreamSpecification"] = stream
    client.create_table(**request)


def test_bootstrap_tables_are_regional_until_made_global(tmp_path: Path, aws: None) -> None:
    bootstrap(tmp_path, IRELAND)
    client = client_for(IRELAND)
    for table in ("bookstore-books", "bookstore-orders", "bookstore-carts", "bookstore-users"):
        assert describe_global(client, table) == [{"region": IRELAND, "status": "ACTIVE"}]
        stream = client.describe_table(TableName=table)["Table"]["StreamSpecification"]
        assert stream == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}


def test_replica_request_as_far_as_moto_goes(tmp_path: Path, aws: None) -> None:
    bootstrap(tmp_path, IRELAND)
    client = client_for(IRELAND)
    sent = record_updates(client)
    with pytest.raises(StorageError, match=NOT_GLOBAL_HERE) as refused:
        make_global(client, "bookstore-carts", [IRELAND, SINGAPORE], client_for=client_for, poll_s=0)
    assert SINGAPORE in refused.value.message
    # The stream was right already; the table's own region gets no replica; one Create per request.
    assert sent == [
        {"TableName": "bookstore-carts", "ReplicaUpdates": [{"Create": {"RegionName": SINGAPORE}}]}
    ]
    # What moto lacks: no replica listed, and no table appeared in Singapore.
    assert describe_global(client, "bookstore-carts") == [{"region": IRELAND, "status": "ACTIVE"}]
    assert "bookstore-carts" not in client_for(SINGAPORE).list_tables()["TableNames"]


def test_replicas_are_asked_for_one_at_a_time(tmp_path: Path, aws: None) -> None:
    bootstrap(tmp_path, IRELAND)
    client = client_for(IRELAND)
    sent = record_updates(client)
    with pytest.raises(StorageError, match=NOT_GLOBAL_HERE):
        make_global(client, "bookstore-books", [SINGAPORE, "us-east-1"], poll_s=0)
    # DynamoDB takes a single replica per UpdateTable: the first request carries one Create only.
    assert [update["ReplicaUpdates"] for update in sent] == [[{"Create": {"RegionName": SINGAPORE}}]]


def test_progress_is_told_each_step_and_each_status_waited_on(tmp_path: Path, aws: None) -> None:
    bootstrap(tmp_path, IRELAND)
    client = client_for(IRELAND)
    told: list[str] = []
    with pytest.raises(StorageError, match=NOT_GLOBAL_HERE):
        make_global(client, "bookstore-books", [SINGAPORE], poll_s=0, progress=told.append)
    assert f"bookstore-books: adding a replica in {SINGAPORE} (minutes to an hour on AWS)" in told


def test_own_region_only_changes_nothing_and_repeats(tmp_path: Path, aws: None) -> None:
    bootstrap(tmp_path, IRELAND)
    client = client_for(IRELAND)
    sent = record_updates(client)
    expected = {
        "table": "bookstore-orders",
        "region": IRELAND,
        "streamEnabled": False,
        "created": [],
        "skipped": [],
        "replicas": [{"region": IRELAND, "status": "ACTIVE"}],
    }
    assert make_global(client, "bookstore-orders", [IRELAND], poll_s=0) == expected
    assert make_global(client, "bookstore-orders", [f" {IRELAND} ", IRELAND], poll_s=0) == expected
    assert sent == []


def test_stream_is_enabled_first_in_a_request_of_its_own(aws: None) -> None:
    client = client_for(IRELAND)
    create_plain_table(client, "plain")
    sent = record_updates(client)
    report = make_global(client, "plain", [IRELAND], poll_s=0)
    assert report["streamEnabled"] is True
    table = client.describe_table(TableName="plain")["Table"]
    assert table["StreamSpecification"] == {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"}
    assert "LatestStreamArn" in table
    assert make_global(client, "plain", [IRELAND], poll_s=0)["streamEnabled"] is False
    with pytest.raises(StorageError, match=NOT_GLOBAL_HERE):
        make_global(client, "plain", [SINGAPORE], poll_s=0)
    assert sent == [
        {
            "TableName": "plain",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        },
        {"TableName": "plain", "ReplicaUpdates": [{"Create": {"RegionName": SINGAPORE}}]},
    ]


def test_stream_of_another_view_type_is_refused_untouched(aws: None) -> None:
    client = client_for(IRELAND)
    create_plain_table(client, "keys-only", {"StreamEnabled": True, "StreamViewType": "KEYS_ONLY"})
    sent = record_updates(client)
    with pytest.raises(StorageError, match="streams KEYS_ONLY, but global tables need NEW_AND_OLD_IMAGES"):
        make_global(client, "keys-only", [IRELAND, SINGAPORE], poll_s=0)
    assert sent == []
    stream = client.describe_table(TableName="keys-only")["Table"]["StreamSpecification"]
    assert stream["StreamViewType"] == "KEYS_ONLY"


def test_unknown_table_is_a_clear_error(aws: None) -> None:
    client = client_for(IRELAND)
    for call in (
        lambda: make_global(client, "bookstore-nope", [IRELAND, SINGAPORE], poll_s=0),
        lambda: describe_global(client, "bookstore-nope"),
    ):
        with pytest.raises(StorageError) as error:
            call()
        message = error.value.message
        assert "bookstore-nope" in message and IRELAND in message
        assert "ResourceNotFoundException" in message and "not found" in message


def test_a_table_already_in_the_replica_region_is_refused_before_asking(tmp_path: Path, aws: None) -> None:
    # Both regions started on the dynamodb backend: each created its own regional tables.
    bootstrap(tmp_path, IRELAND)
    bootstrap(tmp_path, SINGAPORE)
    client = client_for(IRELAND)
    sent = record_updates(client)
    with pytest.raises(StorageError, match="already exists in ap-southeast-1 and is not a replica"):
        make_global(client, "bookstore-carts", [IRELAND, SINGAPORE], client_for=client_for, poll_s=0)
    assert sent == []


@pytest.mark.parametrize("regions", [[], [" "], ["mars"], [IRELAND, "EU-WEST-2"]])
def test_region_names_are_checked_first(regions: list[str], aws: None) -> None:
    client = client_for(IRELAND)
    sent = record_updates(client)
    with pytest.raises(ValidationError):
        make_global(client, "bookstore-carts", regions, poll_s=0)
    assert sent == []


def test_cli_make_global_and_describe_global(tmp_path: Path, aws: None) -> None:
    topology_file = tmp_path / "topology.toml"
    topology_file.write_text('[storage]\ntables = "dynamodb"\ntable_prefix = "shop-"\n')
    bootstrap(tmp_path, IRELAND, Topology.load(topology_file))
    runner = CliRunner()

    def cli(*args: str) -> Any:
        return runner.invoke(app, [*args, "--topology", str(topology_file)])

    shown = cli("aws", "describe-global", "carts")
    assert shown.exit_code == 0, shown.output
    assert shown.output.split() == ["shop-carts", IRELAND, "ACTIVE"]
    as_json = cli("aws", "describe-global", "shop-carts", "--json")
    assert json.loads(as_json.output) == {
        "table": "shop-carts",
        "replicas": [{"region": IRELAND, "status": "ACTIVE"}],
    }

    same = cli("aws", "make-global", "carts", "--regions", IRELAND, "--json")
    assert same.exit_code == 0, same.output
    assert json.loads(same.output)["created"] == []

    refused = cli("aws", "make-global", "carts", "--regions", f"{IRELAND},{SINGAPORE}", "--timeout", "5")
    assert refused.exit_code == 1
    assert "error:" in refused.output and NOT_GLOBAL_HERE in refused.output and SINGAPORE in refused.output

    unknown = cli("aws", "describe-global", "nope")
    assert unknown.exit_code == 1
    assert "nope" in unknown.output and "ResourceNotFoundException" in unknown.output


@pytest.fixture
def moto_server(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    """moto as a real HTTP endpoint on loopback, for `--endpoint-url` (no in-process interception)."""
    fake_credentials(tmp_path, monkeypatch)
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    try:
        yield f"http://{host}:{port}"
    finally:
        server.stop()


def test_cli_through_an_endpoint_url(tmp_path: Path, moto_server: str) -> None:
    bootstrap(tmp_path, IRELAND, Topology(storage=Storage(tables="dynamodb", dynamodb_endpoint=moto_server)))
    runner = CliRunner()
    shown = runner.invoke(app, ["aws", "describe-global", "books", "--endpoint-url", moto_server])
    assert shown.exit_code == 0, shown.output
    assert shown.output.split() == ["bookstore-books", IRELAND, "ACTIVE"]
    refused = runner.invoke(
        app, ["aws", "make-global", "books", "--regions", SINGAPORE, "--endpoint-url", moto_server]
    )
    assert refused.exit_code == 1
    assert f"{moto_server} accepted UpdateTable ReplicaUpdates for bookstore-books" in refused.output
