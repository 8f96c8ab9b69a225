"""Object replication between real region processes across the link simulator (issue 4's "Done when").

One `bookstore up` serves the whole module; each test makes buckets of its own. Clients use the
Ireland endpoint for everything, as a user after `eval "$(bookstore aws-env eu-west-1)"` would:
requests for Singapore's buckets are forwarded through the link.
"""

from __future__ import annotations

import base64
import json
import os
import shlex
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials
from botocore.exceptions import ClientError
from prometheus_client.parser import text_string_to_metric_families

from bookstore.kernel.auth import sign
from tests.support import waiting
from tests.support.regions import System, system_up
from tests.support.s3_replication import replicate

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
# Generous bounds for a loaded 2-core machine; every wait ends as soon as its condition holds.
WAIT_S = 60.0
ODD_KEYS = [
    "..",
    "../../outside.txt",
    "a/../../../etc/passwd",
    "%2F",
    "dir%2Fnot-a-dir/%2e%2e",
    "unicode/ключ/日本語/é😀",
    "spaces and + plus & amp?query=1#frag;semi",
    "x" * 1024,
    "é" * 512,
]

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = WAIT_S) -> T:
    return waiting.wait_for(what, probe, ok, timeout, (ClientError, httpx.HTTPError))


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("objects")) as running:
        yield running


def client(system: System, region: str = EU, **config: Any) -> Any:
    topology, access = system.topology, system.s3_access
    return boto3.client(
        "s3",
        endpoint_url=topology.region(region).s3_url,
        region_name=region,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(
            **{
                "signature_version": "s3v4",
                "s3": {"addressing_style": "path"},
                "retries": {"max_attempts": 2},
                "read_timeout": 30,
                **config,
            }
        ),
    )


@pytest.fixture(scope="module")
def s3(system: System) -> Any:
    return client(system)


def name(prefix: str) -> str:
    return f"{prefix}-{uuid.uuid4().hex[:8]}"


def pair(s3: Any, prefix: str, *, rule_now: bool = True, delete_markers: str = "Disabled") -> tuple[str, str]:
    """An Ireland bucket and a Singapore bucket, both versioned, made through the Ireland endpoint."""
    ireland, singapore = name(f"{prefix}-ie"), name(f"{prefix}-sg")
    for bucket, region in ((ireland, EU), (singapore, AP)):
        s3.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        s3.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    if rule_now:
        replicate(s3, ireland, singapore, delete_markers=delete_markers)
    return ireland, singapore


def replicated(s3: Any, bucket: str, key: str, version_id: str) -> dict[str, Any]:
    """The head of the copy of `version_id` in `bucket`, once it is there."""
    return wait_for(
        f"{key} {version_id} in {bucket}",
        lambda: s3.head_object(Bucket=bucket, Key=key, VersionId=version_id),
        lambda head: head["VersionId"] == version_id,
    )


def replicated_with(s3: Any, bucket: str, key: str, version_id: str, sse_c: dict[str, str]) -> dict[str, Any]:
    """The head of the copy of an SSE-C `version_id` in `bucket` (read with its key), once it is there."""
    return wait_for(
        f"{key} {version_id} in {bucket}",
        lambda: s3.head_object(Bucket=bucket, Key=key, VersionId=version_id, **sse_c),
        lambda head: head["VersionId"] == version_id,
    )


def source_status(s3: Any, bucket: str, key: str, version_id: str) -> str | None:
    status: str | None = s3.head_object(Bucket=bucket, Key=key, VersionId=version_id).get("ReplicationStatus")
    return status


def objects_status(system: System, region: str = EU) -> dict[str, Any]:
    status: dict[str, Any] = system.api(region).get("/status").json()["objects"]
    return status


def metric(system: System, region: str, sample: str, **labels: str) -> float:
    text = system.api(region).get("/metrics").text
    return sum(
        s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
        if s.name == sample and all(s.labels.get(k) == v for k, v in labels.items())
    )


def versions(s3: Any, bucket: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    page = s3.list_object_versions(Bucket=bucket)
    return page.get("Versions", []), page.get("DeleteMarkers", [])


# A PUT in Ireland appears in Singapore.


def test_a_put_in_ireland_appears_in_singapore_as_a_replica(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "put")
    put = s3.put_object(
        Bucket=ireland,
        Key="covers/lotr.svg",
        Body=b"<svg>one ring</svg>",
        ContentType="image/svg+xml",
        Metadata={"author": "tolkien"},
        CacheControl="max-age=60",
        Tagging="shelf=fantasy",
    )
    version_id = put["VersionId"]
    copy = replicated(s3, singapore, "covers/lotr.svg", version_id)
    original = s3.head_object(Bucket=ireland, Key="covers/lotr.svg", VersionId=version_id)
    assert copy["ReplicationStatus"] == "REPLICA"
    assert wait_for(
        "the source COMPLETED",
        lambda: source_status(s3, ireland, "covers/lotr.svg", version_id),
        lambda status: status == "COMPLETED",
    )
    for field in ("ETag", "LastModified", "ContentType", "Metadata", "CacheControl", "ContentLength"):
        assert copy[field] == original[field], field
    assert copy["TagCount"] == 1
    # Singapore's own endpoint serves the same copy as the Ireland endpoint forwards.
    local = client(system, AP).get_object(Bucket=singapore, Key="covers/lotr.svg")
    assert local["Body"].read() == b"<svg>one ring</svg>"
    assert local["VersionId"] == version_id and local["ReplicationStatus"] == "REPLICA"
    # A replica is not replicated again: Singapore queues nothing.
    assert objects_status(system, AP)["pending"]["operations"] == 0
    assert metric(system, EU, "bookstore_object_replication_latency_seconds_count", destination=AP) >= 1
    assert metric(system, EU, "bookstore_object_replication_completed_total", destination=AP) >= 1


def test_a_large_multipart_object_replicates_with_its_etag(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "big")
    data = os.urandom(6 * 1024 * 1024) + os.urandom(1000)
    upload = s3.create_multipart_upload(Bucket=ireland, Key="app.bin")["UploadId"]
    parts = []
    for number, chunk in enumerate((data[: 5 * 1024 * 1024], data[5 * 1024 * 1024 :]), start=1):
        etag = s3.upload_part(Bucket=ireland, Key="app.bin", UploadId=upload, PartNumber=number, Body=chunk)
        parts.append({"PartNumber": number, "ETag": etag["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=ireland, Key="app.bin", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    copy = replicated(s3, singapore, "app.bin", done["VersionId"])
    assert copy["ETag"] == done["ETag"] and done["ETag"].endswith('-2"')
    assert s3.get_object(Bucket=singapore, Key="app.bin")["Body"].read() == data


def test_a_replica_answers_part_number_reads_as_its_source(system: System, s3: Any, tmp_path: Path) -> None:
    ireland, singapore = pair(s3, "parts")
    part1, part2 = os.urandom(5 * 1024 * 1024), os.urandom(1000)
    upload = s3.create_multipart_upload(Bucket=ireland, Key="app.bin", ChecksumAlgorithm="SHA256")["UploadId"]
    parts = []
    for number, chunk in enumerate((part1, part2), start=1):
        done = s3.upload_part(
            Bucket=ireland,
            Key="app.bin",
            UploadId=upload,
            PartNumber=number,
            Body=chunk,
            ChecksumAlgorithm="SHA256",
        )
        parts.append({"PartNumber": number, "ETag": done["ETag"], "ChecksumSHA256": done["ChecksumSHA256"]})
    done = s3.complete_multipart_upload(
        Bucket=ireland, Key="app.bin", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    version_id = done["VersionId"]
    replicated(s3, singapore, "app.bin", version_id)
    singapore_s3 = client(system, AP)
    fields = ("ContentRange", "ContentLength", "PartsCount", "ETag", "VersionId")
    for number, chunk in ((1, part1), (2, part2)):
        origin = s3.get_object(Bucket=ireland, Key="app.bin", PartNumber=number)
        # Read from Singapore's own endpoint: its own store answers, not a forward to Ireland.
        replica = singapore_s3.get_object(Bucket=singapore, Key="app.bin", PartNumber=number)
        assert replica["ResponseMetadata"]["HTTPStatusCode"] == 206
        assert {f: replica[f] for f in fields} == {f: origin[f] for f in fields}
        assert replica["Body"].read() == chunk == origin["Body"].read()
        head = singapore_s3.head_object(
            Bucket=singapore, Key="app.bin", PartNumber=number, VersionId=version_id
        )
        assert (head["ContentRange"], head["PartsCount"]) == (origin["ContentRange"], 2)
    with pytest.raises(ClientError) as past:
        singapore_s3.head_object(Bucket=singapore, Key="app.bin", PartNumber=3)
    assert past.value.response["ResponseMetadata"]["HTTPStatusCode"] == 416
    # The parts' sizes and checksums, as GetObjectAttributes lists them, are the source's.
    wanted = ["ObjectParts", "Checksum", "ETag", "ObjectSize"]
    source_attributes = s3.get_object_attributes(Bucket=ireland, Key="app.bin", ObjectAttributes=wanted)
    replica_attributes = singapore_s3.get_object_attributes(
        Bucket=singapore, Key="app.bin", ObjectAttributes=wanted
    )
    for field in ("ObjectParts", "Checksum", "ETag", "ObjectSize"):
        assert replica_attributes[field] == source_attributes[field], field
    assert [p["Size"] for p in replica_attributes["ObjectParts"]["Parts"]] == [len(part1), len(part2)]
    # The aws CLI reads the same part through the Ireland endpoint (forwarded to Singapore).
    cli = json.loads(
        aws(
            system,
            tmp_path,
            "s3api",
            "head-object",
            "--bucket",
            singapore,
            "--key",
            "app.bin",
            "--part-number",
            "2",
        ).stdout
    )
    assert (cli["ContentLength"], cli["PartsCount"], cli["ContentRange"]) == (
        len(part2),
        2,
        f"bytes {len(part1)}-{len(part1) + len(part2) - 1}/{len(part1) + len(part2)}",
    )


def test_non_ascii_metadata_replicates_as_text(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "meta")
    encoded = "=?UTF-8?B?" + base64.b64encode("Café 東京".encode()).decode() + "?="
    put = s3.put_object(Bucket=ireland, Key="k", Body=b"x", Metadata={"title": encoded, "plain": "ok"})
    copy = replicated(s3, singapore, "k", put["VersionId"])
    # Stored as text in each region, answered as the RFC 2047 encoded word S3 sends, by either region.
    assert copy["Metadata"] == {"title": encoded, "plain": "ok"}
    local = client(system, AP).get_object(Bucket=singapore, Key="k")
    assert local["Metadata"] == {"title": encoded, "plain": "ok"}
    assert s3.head_object(Bucket=ireland, Key="k")["Metadata"] == copy["Metadata"]

    # Sent as UTF-8 (as most SDKs send it; botocore only through a hook), it is the same text.
    def add_title(request: Any, **_: Any) -> None:
        request.headers["x-amz-meta-title"] = "Café 東京"

    s3.meta.events.register("before-sign.s3.PutObject", add_title)
    try:
        raw = s3.put_object(Bucket=ireland, Key="raw", Body=b"x")
        # Into Singapore's bucket through the Ireland endpoint: forwarded with its bytes as received.
        s3.put_object(Bucket=singapore, Key="forwarded", Body=b"x")
    finally:
        s3.meta.events.unregister("before-sign.s3.PutObject", add_title)
    assert replicated(s3, singapore, "raw", raw["VersionId"])["Metadata"] == {"title": encoded}
    assert client(system, AP).head_object(Bucket=singapore, Key="raw")["Metadata"] == {"title": encoded}
    assert client(system, AP).head_object(Bucket=singapore, Key="forwarded")["Metadata"] == {"title": encoded}
    assert s3.head_object(Bucket=singapore, Key="forwarded")["Metadata"] == {"title": encoded}


# Deletes.


def test_delete_markers_replicate_only_where_the_rule_says_so(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "markers")
    first = s3.put_object(Bucket=ireland, Key="page.html", Body=b"v1")["VersionId"]
    replicated(s3, singapore, "page.html", first)

    hidden = s3.delete_object(Bucket=ireland, Key="page.html")
    assert hidden["DeleteMarker"] is True
    # A later version proves the worker has moved past the marker: the marker itself was never queued.
    sentinel = s3.put_object(Bucket=ireland, Key="sentinel", Body=b"after the marker")["VersionId"]
    replicated(s3, singapore, "sentinel", sentinel)
    assert s3.get_object(Bucket=singapore, Key="page.html")["Body"].read() == b"v1"
    assert versions(s3, singapore)[1] == []

    replicate(s3, ireland, singapore, delete_markers="Enabled")
    marker = s3.delete_object(Bucket=ireland, Key="sentinel")["VersionId"]
    markers = wait_for(
        "the delete marker in Singapore",
        lambda: versions(s3, singapore)[1],
        lambda found: any(m["VersionId"] == marker for m in found),
    )
    assert [m["Key"] for m in markers] == ["sentinel"]
    with pytest.raises(ClientError) as hidden_now:
        s3.get_object(Bucket=singapore, Key="sentinel")
    assert hidden_now.value.response["Error"]["Code"] == "NoSuchKey"


def test_a_delete_by_version_id_never_replicates(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "vdelete", delete_markers="Enabled")
    old = s3.put_object(Bucket=ireland, Key="doc", Body=b"old")["VersionId"]
    new = s3.put_object(Bucket=ireland, Key="doc", Body=b"new")["VersionId"]
    replicated(s3, singapore, "doc", old)
    replicated(s3, singapore, "doc", new)

    s3.delete_object(Bucket=ireland, Key="doc", VersionId=old)
    sentinel = s3.put_object(Bucket=ireland, Key="sentinel", Body=b"later")["VersionId"]
    replicated(s3, singapore, "sentinel", sentinel)
    assert [v["VersionId"] for v in versions(s3, ireland)[0] if v["Key"] == "doc"] == [new]
    assert sorted(v["VersionId"] for v in versions(s3, singapore)[0] if v["Key"] == "doc") == sorted(
        [old, new]
    )
    assert s3.get_object(Bucket=singapore, Key="doc", VersionId=old)["Body"].read() == b"old"


# What existed before the rule.


def test_objects_from_before_the_rule_stay_unreplicated_until_sync(
    system: System, s3: Any, tmp_path: Path
) -> None:
    ireland, singapore = pair(s3, "before", rule_now=False)
    s3.put_object(Bucket=ireland, Key="old.txt", Body=b"from before the rule")
    replicate(s3, ireland, singapore)
    new = s3.put_object(Bucket=ireland, Key="new.txt", Body=b"after the rule")["VersionId"]
    replicated(s3, singapore, "new.txt", new)
    assert "ReplicationStatus" not in s3.head_object(Bucket=ireland, Key="old.txt")
    with pytest.raises(ClientError) as missing:
        s3.head_object(Bucket=singapore, Key="old.txt")
    assert missing.value.response["Error"]["Code"] == "404"

    aws(system, tmp_path, "s3", "sync", f"s3://{ireland}", f"s3://{singapore}")
    assert s3.get_object(Bucket=singapore, Key="old.txt")["Body"].read() == b"from before the rule"


# Faults: the link cut and healed, the destination killed and restarted.


def put_many(s3: Any, bucket: str, count: int, prefix: str) -> dict[str, str]:
    return {
        f"{prefix}/{i}": s3.put_object(Bucket=bucket, Key=f"{prefix}/{i}", Body=os.urandom(3000 + i))[
            "VersionId"
        ]
        for i in range(count)
    }


def all_completed(system: System, s3: Any, ireland: str, singapore: str, written: dict[str, str]) -> None:
    """Every version COMPLETED at the source and REPLICA in Singapore (read at Singapore's endpoint)."""
    local = client(system, AP)
    wait_for(
        "every version COMPLETED",
        lambda: [source_status(s3, ireland, k, v) for k, v in written.items()],
        lambda statuses: all(s == "COMPLETED" for s in statuses),
    )
    for key, version_id in written.items():
        head = local.head_object(Bucket=singapore, Key=key, VersionId=version_id)
        assert head["ReplicationStatus"] == "REPLICA"
    wait_for(
        "nothing PENDING in Ireland",
        lambda: objects_status(system)["pending"]["operations"],
        lambda pending: pending == 0,
    )


def test_replication_resumes_after_the_link_is_cut_and_healed(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "cut")
    system.cli("link", "cut", EU, AP)
    try:
        written = put_many(s3, ireland, 12, "during-cut")
        time.sleep(1.0)
        assert {source_status(s3, ireland, k, v) for k, v in written.items()} == {"PENDING"}
        status = objects_status(system)
        assert status["pending"]["operations"] >= 12 and status["pending"]["bytes"] >= 12 * 3000
        report = json.loads(system.cli("status", "--json").stdout)
        assert any(
            p["source"] == EU and p["destination"] == AP and p["pendingOperations"] >= 12
            for p in report["objects"]
        )
    finally:
        system.cli("link", "heal", EU, AP)
    all_completed(system, s3, ireland, singapore, written)


def test_replication_resumes_after_the_destination_is_killed_and_restarted(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "kill")
    system.cli("region", "kill", AP)
    try:
        written = put_many(s3, ireland, 8, "while-down")
        wait_for(
            "Ireland sees Singapore down",
            lambda: objects_status(system)["destinations"][AP],
            lambda state: state["retrying"] and state["reachable"] is False and state["lastError"],
        )
        assert {source_status(s3, ireland, k, v) for k, v in written.items()} == {"PENDING"}
        # A killed region does not answer: `status` prints its report and exits 1.
        shown = system.cli("status", check=False)
        assert shown.returncode == 1 and f"no answer from {AP}" in shown.stderr
        assert "Object replication" in shown.stdout
    finally:
        system.cli("region", "start", AP)
    all_completed(system, s3, ireland, singapore, written)


def test_a_refused_copy_is_failed_with_its_reason(system: System, s3: Any) -> None:
    ireland = name("refused-ie")
    unversioned = name("refused-sg")
    s3.create_bucket(Bucket=ireland, CreateBucketConfiguration={"LocationConstraint": EU})
    s3.put_bucket_versioning(Bucket=ireland, VersioningConfiguration={"Status": "Enabled"})
    s3.create_bucket(Bucket=unversioned, CreateBucketConfiguration={"LocationConstraint": AP})
    replicate(s3, ireland, unversioned)
    version_id = s3.put_object(Bucket=ireland, Key="doomed", Body=b"x")["VersionId"]
    wait_for(
        "the version FAILED",
        lambda: source_status(s3, ireland, "doomed", version_id),
        lambda status: status == "FAILED",
    )
    failures = objects_status(system)["recentFailures"]
    reason = next(f["reason"] for f in failures if f["versionId"] == version_id)
    assert "InvalidRequest" in reason and "Versioning" in reason
    assert metric(system, EU, "bookstore_object_replication_failed_total", destination=AP) >= 1


# Refused requests change nothing, wherever the bucket lives.


def signed(
    system: System, method: str, url: str, *, key: str, secret: str, body: bytes = b""
) -> httpx.Response:
    request = AWSRequest(method=method, url=url, data=body)
    S3SigV4Auth(Credentials(key, secret), "s3", EU).add_auth(request)
    return httpx.request(method, url, content=body, headers=dict(request.headers.items()), timeout=30)


def test_bad_signatures_unknown_keys_and_expired_urls_get_403_and_change_nothing(
    system: System, s3: Any
) -> None:
    ireland, singapore = pair(s3, "auth")
    access = system.s3_access
    endpoint = system.topology.region(EU).s3_url
    for bucket in (ireland, singapore):  # Singapore's bucket: refused in Ireland, never forwarded
        url = f"{endpoint}/{bucket}/intruder.txt"
        wrong = signed(system, "PUT", url, key=access.access_key_id, secret="not-the-secret", body=b"x")
        assert wrong.status_code == 403 and "<Code>SignatureDoesNotMatch</Code>" in wrong.text
        unknown = signed(system, "PUT", url, key="AKIAUNKNOWNKEY000000", secret="whatever", body=b"x")
        assert unknown.status_code == 403 and "<Code>InvalidAccessKeyId</Code>" in unknown.text
        expired_url = s3.generate_presigned_url(
            "put_object", Params={"Bucket": bucket, "Key": "intruder.txt"}, ExpiresIn=1
        )
        time.sleep(1.5)
        expired = httpx.put(expired_url, content=b"x", timeout=30)
        assert expired.status_code == 403 and "<Code>AccessDenied</Code>" in expired.text
        assert "Contents" not in s3.list_objects_v2(Bucket=bucket)
    # The internal endpoints take requests signed with the deployment's secret, nothing else.
    target = f"{system.topology.region(AP).s3_url}/_replication/objects?version=x"
    assert httpx.put(target, content=b"x").status_code == 401
    forged = sign(
        "not-the-secret", "PUT", "/_replication/objects?version=x", b"x", EU, int(time.time() * 1000), AP
    )
    assert httpx.put(target, content=b"x", headers=forged).status_code == 403
    assert "Contents" not in s3.list_objects_v2(Bucket=singapore)


def test_a_malformed_replication_configuration_gets_malformed_xml(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "malformed", rule_now=False)
    for bucket in (ireland, singapore):
        with pytest.raises(ClientError) as bad_status:
            s3.put_bucket_replication(
                Bucket=bucket,
                ReplicationConfiguration={
                    "Role": "arn:aws:iam::123456789012:role/r",
                    "Rules": [
                        {"Status": "Maybe", "Priority": 1, "Destination": {"Bucket": "arn:aws:s3:::x"}}
                    ],
                },
            )
        assert bad_status.value.response["Error"]["Code"] == "MalformedXML"
        access = system.s3_access
        url = f"{system.topology.region(EU).s3_url}/{bucket}?replication"
        garbage = signed(
            system,
            "PUT",
            url,
            key=access.access_key_id,
            secret=access.secret_access_key,
            body=b"<Replication",
        )
        assert garbage.status_code == 400 and "<Code>MalformedXML</Code>" in garbage.text
        with pytest.raises(ClientError) as none:
            s3.get_bucket_replication(Bucket=bucket)
        assert none.value.response["Error"]["Code"] == "ReplicationConfigurationNotFoundError"


# Keys.


def test_odd_keys_are_stored_and_returned_exactly_through_forwarding_and_replication(
    system: System, s3: Any
) -> None:
    ireland, singapore = pair(s3, "keys")
    singapore_only = name("keys-direct")
    s3.create_bucket(Bucket=singapore_only, CreateBucketConfiguration={"LocationConstraint": AP})
    written = {}
    for i, key in enumerate(ODD_KEYS):
        body = f"object {i}".encode()
        # Written through the Ireland endpoint: into Ireland (then replicated) and forwarded to Singapore.
        written[key] = s3.put_object(Bucket=ireland, Key=key, Body=body)["VersionId"]
        s3.put_object(Bucket=singapore_only, Key=key, Body=body)
    local = client(system, AP)
    for i, key in enumerate(ODD_KEYS):
        body = f"object {i}".encode()
        assert s3.get_object(Bucket=singapore_only, Key=key)["Body"].read() == body
        assert local.get_object(Bucket=singapore_only, Key=key)["Body"].read() == body
        replicated(s3, singapore, key, written[key])
        assert local.get_object(Bucket=singapore, Key=key)["Body"].read() == body
    for bucket in (singapore_only, singapore):
        listed = [o["Key"] for o in s3.list_objects_v2(Bucket=bucket)["Contents"]]
        assert sorted(listed) == sorted(ODD_KEYS)
    # Nothing outside the stores' roots, nothing inside named after a key.
    data = system.data_dir
    allowed = {"objects.sqlite3", "objects.sqlite3-wal", "objects.sqlite3-shm", "blobs", "tmp", "keys"}
    for region in (EU, AP):
        assert {p.name for p in (data / region / "objects").iterdir()} <= allowed
    names = {p.name for p in data.rglob("*")}
    assert not names & {"outside.txt", "passwd", "%2F", "é😀"}


# Buckets are one namespace.


def test_bucket_names_are_one_namespace(system: System, s3: Any) -> None:
    taken = name("taken")
    s3.create_bucket(Bucket=taken, CreateBucketConfiguration={"LocationConstraint": AP})
    singapore = client(system, AP)
    with pytest.raises(ClientError) as elsewhere:
        s3.create_bucket(Bucket=taken, CreateBucketConfiguration={"LocationConstraint": EU})
    assert elsewhere.value.response["Error"]["Code"] == "BucketAlreadyExists"
    with pytest.raises(ClientError) as again:
        singapore.create_bucket(Bucket=taken, CreateBucketConfiguration={"LocationConstraint": AP})
    assert again.value.response["Error"]["Code"] == "BucketAlreadyOwnedByYou"
    assert s3.get_bucket_location(Bucket=taken)["LocationConstraint"] == AP
    assert s3.head_bucket(Bucket=taken)["ResponseMetadata"]["HTTPHeaders"]["x-amz-bucket-region"] == AP
    wait_for(
        "the bucket listed in both regions",
        lambda: [[b["Name"] for b in c.list_buckets()["Buckets"]] for c in (s3, singapore)],
        lambda listings: all(taken in listing for listing in listings),
    )
    s3.delete_bucket(Bucket=taken)
    with pytest.raises(ClientError) as gone:
        singapore.head_bucket(Bucket=taken)
    assert gone.value.response["Error"]["Code"] == "404"


# The aws CLI.


def aws(system: System, home: Path, *args: str) -> subprocess.CompletedProcess[str]:
    """The real aws CLI with the environment `bookstore aws-env eu-west-1` prints."""
    env = {"PATH": os.environ.get("PATH", ""), "HOME": str(home), "AWS_PAGER": ""}
    env["AWS_SHARED_CREDENTIALS_FILE"] = str(home / "none")
    env["AWS_CONFIG_FILE"] = str(home / "none")
    for line in system.cli("aws-env", EU).stdout.splitlines():
        assignment = line.removeprefix("export ")
        variable, _, value = assignment.partition("=")
        env[variable] = shlex.split(value)[0]
    done = subprocess.run(
        [str(Path(sys.executable).parent / "aws"), *args],
        env=env,
        cwd=home,
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert done.returncode == 0, f"aws {' '.join(args)} failed:\n{done.stdout}\n{done.stderr}"
    return done


def test_checksums_and_encryption_replicate_sse_c_objects_too(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "sse")
    marker = b"REPLICATED-PLAINTEXT-" * 4000
    put = s3.put_object(Bucket=ireland, Key="book.txt", Body=marker, ChecksumAlgorithm="SHA256")
    version_id = put["VersionId"]
    replicated(s3, singapore, "book.txt", version_id)
    copy = s3.head_object(Bucket=singapore, Key="book.txt", VersionId=version_id, ChecksumMode="ENABLED")
    assert copy["ChecksumSHA256"] == put["ChecksumSHA256"]
    assert copy["ServerSideEncryption"] == "AES256"
    got = client(system, AP).get_object(Bucket=singapore, Key="book.txt", VersionId=version_id)
    assert got["Body"].read() == marker
    # Each region encrypts with its own key; neither keeps the plaintext on disk.
    keys = sorted(system.data_dir.rglob("sse-*.key"))
    assert len({k.read_bytes() for k in keys}) == len(keys) >= 2
    for key in keys:
        for path in key.parent.parent.rglob("*"):
            if path.is_file():
                assert marker[:4096] not in path.read_bytes(), path
    # An SSE-C object is replicated, as S3 replicates them: its sealed content and the proof of its key
    # travel (never the key), and the replica is read with the key, as the source is.
    secret, other = "k" * 32, "o" * 32
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": secret}
    small_secret = b"CUSTOMER-KEYED-" * 10
    kept = s3.put_object(Bucket=ireland, Key="secret.txt", Body=small_secret, **sse_c)
    copy = replicated_with(s3, singapore, "secret.txt", kept["VersionId"], sse_c)
    assert (copy["ReplicationStatus"], copy["SSECustomerAlgorithm"]) == ("REPLICA", "AES256")
    assert copy["SSECustomerKeyMD5"] == kept["SSECustomerKeyMD5"] and copy["ETag"] == kept["ETag"]
    singapore_s3 = client(system, AP)
    assert singapore_s3.get_object(Bucket=singapore, Key="secret.txt", **sse_c)["Body"].read() == small_secret
    with pytest.raises(ClientError) as keyless:
        singapore_s3.get_object(Bucket=singapore, Key="secret.txt")
    assert keyless.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    with pytest.raises(ClientError) as wrong:
        singapore_s3.get_object(
            Bucket=singapore, Key="secret.txt", SSECustomerAlgorithm="AES256", SSECustomerKey=other
        )
    assert wrong.value.response["ResponseMetadata"]["HTTPStatusCode"] == 403
    assert wait_for(
        "the SSE-C source COMPLETED",
        lambda: s3.head_object(Bucket=ireland, Key="secret.txt", **sse_c).get("ReplicationStatus"),
        lambda status: status == "COMPLETED",
    )
    # A multipart one, streamed (over a MiB): its parts' pieces and part numbers as at the source.
    parts_data = [b"SECRET-PART-ONE-" * (5 * 1024 * 1024 // 16), b"SECRET-TAIL" * 100]
    upload = s3.create_multipart_upload(Bucket=ireland, Key="secret.bin", **sse_c)["UploadId"]
    parts = []
    for number, chunk in enumerate(parts_data, start=1):
        done = s3.upload_part(
            Bucket=ireland, Key="secret.bin", UploadId=upload, PartNumber=number, Body=chunk, **sse_c
        )
        parts.append({"PartNumber": number, "ETag": done["ETag"]})
    done = s3.complete_multipart_upload(
        Bucket=ireland, Key="secret.bin", UploadId=upload, MultipartUpload={"Parts": parts}
    )
    replicated_with(s3, singapore, "secret.bin", done["VersionId"], sse_c)
    whole = singapore_s3.get_object(Bucket=singapore, Key="secret.bin", **sse_c)
    assert whole["Body"].read() == b"".join(parts_data)
    second = singapore_s3.get_object(Bucket=singapore, Key="secret.bin", PartNumber=2, **sse_c)
    assert (second["PartsCount"], second["Body"].read()) == (2, parts_data[1])
    # Neither region keeps the plaintext on disk.
    for key in sorted(system.data_dir.rglob("sse-*.key")):
        for path in key.parent.parent.rglob("*"):
            if path.is_file():
                data = path.read_bytes()
                assert small_secret[:64] not in data and parts_data[0][:4096] not in data, path
    # SSE-C through the Ireland endpoint into a Singapore bucket: the request, key included, is forwarded.
    s3.put_object(Bucket=singapore, Key="direct-secret.txt", Body=b"forwarded", **sse_c)
    assert s3.get_object(Bucket=singapore, Key="direct-secret.txt", **sse_c)["Body"].read() == b"forwarded"
    with pytest.raises(ClientError):
        s3.get_object(Bucket=singapore, Key="direct-secret.txt")


def test_an_sse_c_object_is_copied_from_another_region_with_its_key(system: System, s3: Any) -> None:
    ireland, singapore = pair(s3, "ssecopy", rule_now=False)
    key, other = "k" * 32, "o" * 32
    sse_c = {"SSECustomerAlgorithm": "AES256", "SSECustomerKey": key}
    source = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": key}
    big = os.urandom(2 * 1024 * 1024 + 5)  # streamed between the regions, not read whole
    for name_, body in (("small.txt", b"across the link"), ("big.bin", big)):
        # Into Singapore through the Ireland endpoint (forwarded), then copied back into Ireland.
        s3.put_object(Bucket=singapore, Key=name_, Body=body, **sse_c)
        s3.copy_object(Bucket=ireland, Key=name_, CopySource={"Bucket": singapore, "Key": name_}, **source)
        assert s3.get_object(Bucket=ireland, Key=name_)["Body"].read() == body
        # Sealed again with another key on the way.
        s3.copy_object(
            Bucket=ireland,
            Key=f"rekeyed-{name_}",
            CopySource={"Bucket": singapore, "Key": name_},
            SSECustomerAlgorithm="AES256",
            SSECustomerKey=other,
            **source,
        )
        got = s3.get_object(
            Bucket=ireland, Key=f"rekeyed-{name_}", SSECustomerAlgorithm="AES256", SSECustomerKey=other
        )
        assert got["Body"].read() == body
    # A part copied from it into an upload in Ireland.
    upload = s3.create_multipart_upload(Bucket=ireland, Key="assembled")["UploadId"]
    part = s3.upload_part_copy(
        Bucket=ireland,
        Key="assembled",
        UploadId=upload,
        PartNumber=1,
        CopySource={"Bucket": singapore, "Key": "small.txt"},
        CopySourceRange="bytes=0-5",
        **source,
    )
    s3.complete_multipart_upload(
        Bucket=ireland,
        Key="assembled",
        UploadId=upload,
        MultipartUpload={"Parts": [{"PartNumber": 1, "ETag": part["CopyPartResult"]["ETag"]}]},
    )
    assert s3.get_object(Bucket=ireland, Key="assembled")["Body"].read() == b"across"
    # Without the key, or with another, Singapore refuses the read as S3 does: 400 and 403, not 501.
    with pytest.raises(ClientError) as keyless:
        s3.copy_object(Bucket=ireland, Key="no", CopySource={"Bucket": singapore, "Key": "small.txt"})
    assert keyless.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    wrong = {"CopySourceSSECustomerAlgorithm": "AES256", "CopySourceSSECustomerKey": other}
    with pytest.raises(ClientError) as refused:
        s3.copy_object(
            Bucket=ireland, Key="no", CopySource={"Bucket": singapore, "Key": "small.txt"}, **wrong
        )
    assert (
        refused.value.response["Error"]["Code"],
        refused.value.response["ResponseMetadata"]["HTTPStatusCode"],
    ) == (
        "AccessDenied",
        403,
    )
    with pytest.raises(ClientError):
        s3.head_object(Bucket=ireland, Key="no")
