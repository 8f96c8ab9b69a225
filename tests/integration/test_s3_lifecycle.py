"""Lifecycle configurations on a region's S3 API (boto3, aws CLI) and the sweeper carrying them out."""

from __future__ import annotations

import json
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from botocore.exceptions import ClientError

from bookstore.objectstore.configs import ReplicationConfiguration
from bookstore.objectstore.errors import NoSuchUpload
from bookstore.objectstore.lifecycle import check, date_ms
from bookstore.objectstore.port import ObjectStore
from bookstore.objectstore.sweeper import LifecycleSweeper
from bookstore.storage.local import LocalObjectStore
from bookstore.storage.memory import MemoryObjectStore
from tests.support.aws_cli import aws
from tests.support.s3_server import REGION, S3Server

BUCKET = "logs"
DAY = 1000  # one lifecycle "day" of the tests, in ms of the test clock


@pytest.fixture
def s3(server: S3Server) -> Any:
    client = server.client()
    client.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    return client


def code(exc: pytest.ExceptionInfo[ClientError]) -> str:
    return str(exc.value.response["Error"]["Code"])


RULES: list[dict[str, Any]] = [
    {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}},
    {
        "ID": "old-versions",
        "Filter": {},
        "Status": "Enabled",
        "NoncurrentVersionExpiration": {"NoncurrentDays": 30, "NewerNoncurrentVersions": 3},
        "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
    },
    {
        "ID": "markers",
        "Filter": {"And": {"Prefix": "a/", "ObjectSizeGreaterThan": 10}},
        "Status": "Disabled",
        "Expiration": {"ExpiredObjectDeleteMarker": True},
    },
    {
        "ID": "tagged",
        "Filter": {"Tag": {"Key": "kind", "Value": "scratch"}},
        "Status": "Enabled",
        "Expiration": {"Days": 1},
        "Transitions": [{"Days": 30, "StorageClass": "GLACIER"}],
    },
    {
        "ID": "dated",
        "Filter": {"And": {"Prefix": "b/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}},
        "Status": "Enabled",
        "Expiration": {"Date": "2030-01-01T00:00:00Z"},
    },
]


def test_lifecycle_is_stored_returned_and_deleted(s3: Any) -> None:
    with pytest.raises(ClientError) as absent:
        s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    assert code(absent) == "NoSuchLifecycleConfiguration"
    assert absent.value.response["ResponseMetadata"]["HTTPStatusCode"] == 404
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": RULES})
    got = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert [r["ID"] for r in got] == [r["ID"] for r in RULES]
    assert got[0]["Expiration"] == {"Days": 7}
    assert got[1]["NoncurrentVersionExpiration"] == {"NoncurrentDays": 30, "NewerNoncurrentVersions": 3}
    assert got[1]["AbortIncompleteMultipartUpload"] == {"DaysAfterInitiation": 2}
    assert got[2]["Expiration"] == {"ExpiredObjectDeleteMarker": True}
    assert got[2]["Filter"] == {"And": {"Prefix": "a/", "ObjectSizeGreaterThan": 10}}
    assert got[3]["Filter"] == {"Tag": {"Key": "kind", "Value": "scratch"}}
    assert got[3]["Transitions"] == [{"Days": 30, "StorageClass": "GLACIER"}]
    assert got[4]["Expiration"]["Date"].isoformat().startswith("2030-01-01T00:00:00")
    assert got[4]["Filter"]["And"]["Tags"] == [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]
    s3.delete_bucket_lifecycle(Bucket=BUCKET)
    with pytest.raises(ClientError) as gone:
        s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)
    assert code(gone) == "NoSuchLifecycleConfiguration"


def test_a_rule_without_id_gets_one(s3: Any) -> None:
    rule = {"Filter": {"Prefix": ""}, "Status": "Enabled", "Expiration": {"Days": 1}}
    s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule]})
    got = s3.get_bucket_lifecycle_configuration(Bucket=BUCKET)["Rules"]
    assert got[0]["ID"]


@pytest.mark.parametrize(
    ("rule", "expected"),
    [
        ({"Filter": {}, "Status": "Enabled"}, "InvalidRequest"),
        ({"Filter": {}, "Status": "Enabled", "Expiration": {"Days": 0}}, "InvalidArgument"),
        (
            {"Filter": {}, "Status": "Enabled", "Expiration": {"Date": "2030-01-01T12:00:00Z"}},
            "InvalidArgument",
        ),
        (
            {"Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1, "ExpiredObjectDeleteMarker": True}},
            "InvalidRequest",
        ),
        (
            {
                "Filter": {"Tag": {"Key": "k", "Value": "v"}},
                "Status": "Enabled",
                "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 1},
            },
            "InvalidRequest",
        ),
        (
            {
                "Filter": {},
                "Status": "Enabled",
                "NoncurrentVersionExpiration": {"NoncurrentDays": 1, "NewerNoncurrentVersions": 101},
            },
            "InvalidArgument",
        ),
        (
            {"Filter": {}, "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": -1}},
            "InvalidArgument",
        ),
    ],
    ids=[
        "no-action",
        "zero-days",
        "date-not-midnight",
        "marker-with-days",
        "abort-with-tags",
        "too-many-newer",
        "negative-noncurrent",
    ],
)
def test_a_lifecycle_s3_would_refuse_is_refused(s3: Any, rule: dict[str, Any], expected: str) -> None:
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule]})
    assert code(refused) == expected
    assert refused.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400


def test_duplicate_rule_ids_are_refused(s3: Any) -> None:
    rule = {"ID": "same", "Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}}
    with pytest.raises(ClientError) as refused:
        s3.put_bucket_lifecycle_configuration(Bucket=BUCKET, LifecycleConfiguration={"Rules": [rule, rule]})
    assert code(refused) == "InvalidArgument"


def test_the_aws_cli_puts_and_gets_lifecycle(server: S3Server, s3: Any, tmp_path: Path) -> None:
    config = tmp_path / "lifecycle.json"
    config.write_text(json.dumps({"Rules": RULES[:2]}))
    aws(
        server,
        tmp_path,
        "s3api",
        "put-bucket-lifecycle-configuration",
        "--bucket",
        BUCKET,
        "--lifecycle-configuration",
        f"file://{config}",
    )
    got = json.loads(aws(server, tmp_path, "s3api", "get-bucket-lifecycle-configuration", "--bucket", BUCKET))
    assert got["Rules"] == RULES[:2]
    aws(server, tmp_path, "s3api", "delete-bucket-lifecycle", "--bucket", BUCKET)


# The sweeper, over a store and a clock the test moves (a "day" is DAY ms).


class Clock:
    def __init__(self) -> None:
        self.ms = 1_000_000 * DAY

    def now_ms(self) -> int:
        return self.ms


@pytest.fixture(params=["local", "memory"])
def swept(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Iterator[tuple[ObjectStore, Clock, LifecycleSweeper]]:
    clock = Clock()
    store: ObjectStore
    if request.param == "local":
        store = LocalObjectStore(tmp_path / "store", REGION, clock, min_part_size=1)
    else:
        store = MemoryObjectStore(REGION, clock, min_part_size=1)
    yield store, clock, LifecycleSweeper(store, clock, day_ms=DAY)
    if isinstance(store, LocalObjectStore):
        store.close()


def lifecycle(store: ObjectStore, bucket: str, *rules: dict[str, Any]) -> None:
    store.put_config(bucket, "lifecycle", json.dumps(check({"Rules": list(rules)})))


def keys(store: ObjectStore, bucket: str) -> list[tuple[str, bool]]:
    return [(v.key, v.is_delete_marker) for v in store.list_versions(bucket).versions]


def test_expiration_by_days_removes_current_objects_in_an_unversioned_bucket(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("plain")
    store.put_object("plain", "tmp/a", b"a")
    store.put_object("plain", "keep/b", b"b")
    lifecycle(store, "plain", {"Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 2}})
    clock.ms += 1 * DAY
    assert sweeper.sweep().expired == 0
    clock.ms += 2 * DAY
    assert sweeper.sweep().expired == 1
    assert keys(store, "plain") == [("keep/b", False)]


def test_expiration_writes_unreplicated_delete_markers_in_a_versioned_bucket(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("dest")
    store.create_bucket("vers")
    store.set_versioning("vers", "Enabled")
    store.put_replication(
        "vers",
        ReplicationConfiguration.from_json(
            {
                "Role": "arn:aws:iam::1:role/r",
                "Rules": [
                    {
                        "Status": "Enabled",
                        "Priority": 1,
                        "Filter": {},
                        "DeleteMarkerReplication": {"Status": "Enabled"},
                        "Destination": {"Bucket": "arn:aws:s3:::dest"},
                    }
                ],
            }
        ),
    )
    written = store.put_object("vers", "doc", b"v1")
    assert written.replication_status == "PENDING"
    store.set_replication_status("vers", "doc", written.version_id, "COMPLETED")
    # An ordinary delete marker is replicated by that rule; one the lifecycle writes is not (as on S3).
    lifecycle(store, "vers", {"Filter": {}, "Status": "Enabled", "Expiration": {"Days": 1}})
    clock.ms += 3 * DAY
    assert sweeper.sweep().expired == 1
    versions = store.list_versions("vers").versions
    assert [(v.is_delete_marker, v.is_latest) for v in versions] == [(True, True), (False, False)]
    assert store.pending_replications() == []
    assert sweeper.sweep().expired == 0


def test_expiration_by_date_and_tag_filters(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("plain")
    store.put_object("plain", "b/both", b"x", tags={"a": "1", "b": "2"})
    store.put_object("plain", "b/one", b"x", tags={"a": "1"})
    store.put_object("plain", "c/both", b"x", tags={"a": "1", "b": "2"})
    store.put_object("plain", "scratch", b"x", tags={"kind": "scratch"})
    date = time_iso(clock.ms + 5 * DAY)
    lifecycle(
        store,
        "plain",
        {
            "Filter": {
                "And": {"Prefix": "b/", "Tags": [{"Key": "a", "Value": "1"}, {"Key": "b", "Value": "2"}]}
            },
            "Status": "Enabled",
            "Expiration": {"Date": date},
        },
        {
            "Filter": {"Tag": {"Key": "kind", "Value": "scratch"}},
            "Status": "Disabled",
            "Expiration": {"Days": 1},
        },
    )
    clock.ms = date_ms(lifecycle_date(date)) - 1
    assert sweeper.sweep().expired == 0
    clock.ms += 1
    assert sweeper.sweep().expired == 1
    assert [k for k, _ in keys(store, "plain")] == ["b/one", "c/both", "scratch"]


def time_iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT00:00:00Z", time.gmtime(ms // 1000))


def lifecycle_date(value: str) -> str:
    rule = {"Filter": {}, "Status": "Enabled", "Expiration": {"Date": value}}
    return str(check({"Rules": [rule]})["Rules"][0]["Expiration"]["Date"])


def test_size_filters(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("plain")
    for size in (5, 10, 20):
        store.put_object("plain", f"f{size}", b"x" * size)
    lifecycle(
        store,
        "plain",
        {
            "Filter": {"And": {"ObjectSizeGreaterThan": 5, "ObjectSizeLessThan": 20}},
            "Status": "Enabled",
            "Expiration": {"Days": 1},
        },
    )
    clock.ms += 2 * DAY
    sweeper.sweep()
    assert [k for k, _ in keys(store, "plain")] == ["f20", "f5"]


def test_noncurrent_versions_expire_keeping_the_newer_ones(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("vers")
    store.set_versioning("vers", "Enabled")
    ids = []
    for n in range(5):
        ids.append(store.put_object("vers", "doc", f"v{n}".encode()).version_id)
        clock.ms += DAY
    lifecycle(
        store,
        "vers",
        {
            "Filter": {},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 10, "NewerNoncurrentVersions": 2},
        },
    )
    assert sweeper.sweep().noncurrent_removed == 0
    clock.ms += 10 * DAY
    # v0 and v1 were noncurrent for more than 10 days; v2 and v3 are the two newest noncurrent ones.
    assert sweeper.sweep().noncurrent_removed == 2
    left = [v.version_id for v in store.list_versions("vers").versions]
    assert left == list(reversed(ids[2:]))
    assert store.get_object("vers", "doc").read() == b"v4"


def test_expired_object_delete_markers_are_removed(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("vers")
    store.set_versioning("vers", "Enabled")
    store.put_object("vers", "gone", b"x")
    store.delete_object("vers", "gone")
    store.put_object("vers", "alive", b"x")
    store.delete_object("vers", "alive")
    lifecycle(
        store,
        "vers",
        {
            "Filter": {"Prefix": "gone"},
            "Status": "Enabled",
            "NoncurrentVersionExpiration": {"NoncurrentDays": 1},
        },
        {
            "ID": "markers",
            "Filter": {},
            "Status": "Enabled",
            "Expiration": {"ExpiredObjectDeleteMarker": True},
        },
    )
    clock.ms += 3 * DAY
    swept_once = sweeper.sweep()
    # "gone": its only version expired as noncurrent, then its marker had nothing left to hide.
    assert (swept_once.noncurrent_removed, swept_once.markers_removed) == (1, 1)
    assert keys(store, "vers") == [("alive", True), ("alive", False)]


def test_incomplete_multipart_uploads_are_aborted(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("plain")
    old = store.create_upload("plain", "big/old")
    other = store.create_upload("plain", "other/old")
    clock.ms += 3 * DAY
    new = store.create_upload("plain", "big/new")
    lifecycle(
        store,
        "plain",
        {
            "Filter": {"Prefix": "big/"},
            "Status": "Enabled",
            "AbortIncompleteMultipartUpload": {"DaysAfterInitiation": 2},
        },
    )
    assert sweeper.sweep().uploads_aborted == 1
    with pytest.raises(NoSuchUpload):
        store.list_parts("plain", "big/old", old)
    assert store.list_parts("plain", "big/new", new) == []
    assert store.list_parts("plain", "other/old", other) == []


def test_versions_over_many_pages_are_swept(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("vers")
    store.set_versioning("vers", "Enabled")
    for n in range(1200):
        store.put_object("vers", f"k{n % 400:04d}", b"x")
    lifecycle(
        store,
        "vers",
        {"Filter": {}, "Status": "Enabled", "NoncurrentVersionExpiration": {"NoncurrentDays": 1}},
    )
    clock.ms += 3 * DAY
    assert sweeper.sweep().noncurrent_removed == 800
    assert len(store.list_versions("vers").versions) == 400


def test_disabled_rules_and_buckets_without_lifecycle_are_left_alone(swept: Any) -> None:
    store, clock, sweeper = swept
    store.create_bucket("plain")
    store.create_bucket("other")
    store.put_object("plain", "a", b"x")
    store.put_object("other", "a", b"x")
    lifecycle(store, "plain", {"Filter": {}, "Status": "Disabled", "Expiration": {"Days": 1}})
    clock.ms += 10 * DAY
    assert sweeper.sweep().expired == 0
    assert keys(store, "plain") == [("a", False)]
    assert keys(store, "other") == [("a", False)]
