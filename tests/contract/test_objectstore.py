"""The ObjectStore contract, run against LocalObjectStore (a temp dir), S3ObjectStore (moto) and the
memory fake (MemoryObjectStore)."""

from __future__ import annotations

import base64
import hashlib
import json
import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from bookstore.domain.errors import StorageError
from bookstore.objectstore import checksums
from bookstore.objectstore.checksums import Checksum
from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.errors import (
    AccessDenied,
    BadDigest,
    BucketAlreadyOwnedByYou,
    BucketNotEmpty,
    EntityTooSmall,
    InvalidArgument,
    InvalidBucketName,
    InvalidPart,
    InvalidPartOrder,
    InvalidRange,
    InvalidRequest,
    KeyTooLongError,
    MalformedXML,
    MethodNotAllowed,
    NoSuchBucket,
    NoSuchKey,
    NoSuchUpload,
    NoSuchVersion,
    NoSuchWebsiteConfiguration,
    NotSupported,
    ReplicationConfigurationNotFoundError,
)
from bookstore.objectstore.port import ObjectStore, ObjectVersion, Replica, StatusChange
from bookstore.storage.local import LocalObjectStore
from bookstore.storage.memory import MemoryObjectStore
from bookstore.storage.s3 import S3ObjectStore

REGION = "eu-west-1"
MIB = 1024 * 1024
ODD_KEYS = [
    "..",
    "../../outside.txt",
    "a/../../../etc/passwd",
    "%2F",
    "dir%2Fnot-a-dir/%2e%2e",
    "unicode/ключ/日本語/é😀",
    "/leading/slash",
    "spaces and + plus & amp?query=1#frag",
    "x" * 1024,
    "é" * 512,
]
SEED_REPLICATION: dict[str, Any] = {
    "Role": "arn:aws:iam::123456789012:role/bookstore-replication",
    "Rules": [
        {
            "Status": "Enabled",
            "Priority": 1,
            "DeleteMarkerReplication": {"Status": "Disabled"},
            "Filter": {},
            "Destination": {"Bucket": "arn:aws:s3:::bookstore-web-sg"},
        }
    ],
}


class WallClock:
    def now_ms(self) -> int:
        return time.time_ns() // 1_000_000


@dataclass
class Adapter:
    store: ObjectStore
    # S3 keeps replication state itself; the local store takes it from the replicator.
    manages_replication: bool
    root: Path | None = None
    # moto departs from S3 in a few corners; the tests name each one where they step around it.
    moto: bool = False


@pytest.fixture(params=["local", "s3", "memory"])
def adapter(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[Adapter]:
    if request.param == "local":
        store = LocalObjectStore(tmp_path / "store", REGION, WallClock())
        yield Adapter(store, manages_replication=False, root=tmp_path / "store")
        store.close()
    elif request.param == "memory":
        yield Adapter(MemoryObjectStore(REGION, WallClock()), manages_replication=False)
    else:
        with mock_aws():
            client = boto3.client("s3", region_name=REGION)
            yield Adapter(S3ObjectStore(client), manages_replication=True, moto=True)


@pytest.fixture
def store(adapter: Adapter) -> ObjectStore:
    return adapter.store


@pytest.fixture
def bucket(store: ObjectStore) -> str:
    store.create_bucket("books")
    return "books"


@pytest.fixture
def versioned(store: ObjectStore) -> str:
    store.create_bucket("versioned")
    store.set_versioning("versioned", "Enabled")
    return "versioned"


def md5(data: bytes) -> str:
    return hashlib.md5(data).hexdigest()


def all_objects(store: ObjectStore, bucket: str, **kw: object) -> tuple[list[str], list[str]]:
    keys: list[str] = []
    prefixes: list[str] = []
    token = None
    while True:
        page = store.list_objects(bucket, token=token, **kw)  # type: ignore[arg-type]
        keys += [o.key for o in page.objects]
        prefixes += page.common_prefixes
        if page.next_token is None:
            return keys, prefixes
        token = page.next_token


# Buckets.


def test_buckets_are_created_listed_and_deleted(store: ObjectStore) -> None:
    made = store.create_bucket("bookstore-web-ie")
    assert (made.name, made.region, made.versioning) == ("bookstore-web-ie", REGION, "")
    assert store.get_bucket("bookstore-web-ie").region == REGION
    store.create_bucket("another-one")
    assert [b.name for b in store.list_buckets()] == ["another-one", "bookstore-web-ie"]
    with pytest.raises(BucketAlreadyOwnedByYou):
        store.create_bucket("bookstore-web-ie")
    store.delete_bucket("bookstore-web-ie")
    with pytest.raises(NoSuchBucket):
        store.get_bucket("bookstore-web-ie")
    with pytest.raises(NoSuchBucket):
        store.delete_bucket("bookstore-web-ie")
    assert [b.name for b in store.list_buckets()] == ["another-one"]


@pytest.mark.parametrize("name", ["ab", "UpperCase", "under_score", "-dash-first", "a" * 64, "192.168.1.1"])
def test_invalid_bucket_names_are_refused(store: ObjectStore, name: str) -> None:
    with pytest.raises(InvalidBucketName):
        store.create_bucket(name)


def test_a_bucket_with_versions_or_markers_is_not_empty(store: ObjectStore, versioned: str) -> None:
    v = store.put_object(versioned, "k", b"x")
    store.delete_object(versioned, "k")
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket(versioned)
    store.delete_object(versioned, "k", version_id=v.version_id)
    with pytest.raises(BucketNotEmpty):
        store.delete_bucket(versioned)  # the delete marker is still there
    for entry in store.list_versions(versioned).versions:
        store.delete_object(versioned, entry.key, version_id=entry.version_id)
    store.delete_bucket(versioned)


def test_versioning_state_is_kept(store: ObjectStore, bucket: str) -> None:
    store.set_versioning(bucket, "Enabled")
    assert store.get_bucket(bucket).versioning == "Enabled"
    store.set_versioning(bucket, "Suspended")
    assert store.get_bucket(bucket).versioning == "Suspended"
    with pytest.raises(NoSuchBucket):
        store.set_versioning("no-such-bucket", "Enabled")


# Objects.


def test_put_get_head_keep_content_and_metadata(store: ObjectStore, bucket: str) -> None:
    body = b"The Lord of the Rings" * 100
    put = store.put_object(
        bucket,
        "covers/lotr.txt",
        body,
        content_type="text/plain; charset=utf-8",
        metadata={"author": "tolkien", "year": "1954"},
        headers={"Cache-Control": "max-age=60", "Content-Disposition": 'attachment; filename="a.txt"'},
        tags={"kind": "cover", "lang": "en"},
    )
    assert (put.etag, put.size, put.version_id, put.is_latest) == (md5(body), len(body), "null", True)
    got = store.get_object(bucket, "covers/lotr.txt")
    assert got.read() == body
    assert (got.first, got.last, got.partial) == (0, len(body) - 1, False)
    for version in (got.version, store.head_object(bucket, "covers/lotr.txt")):
        assert version.etag == md5(body)
        assert version.size == len(body)
        assert version.content_type == "text/plain; charset=utf-8"
        assert version.metadata == {"author": "tolkien", "year": "1954"}
        assert version.headers["Cache-Control"] == "max-age=60"
        assert version.headers["Content-Disposition"] == 'attachment; filename="a.txt"'
        assert version.tags == {"kind": "cover", "lang": "en"}
        assert version.last_modified_ms == put.last_modified_ms
        assert version.replication_status is None


def test_default_content_type_and_empty_body(store: ObjectStore, bucket: str) -> None:
    put = store.put_object(bucket, "empty", b"")
    assert put.etag == md5(b"") and put.size == 0
    got = store.get_object(bucket, "empty")
    assert got.read() == b""
    assert got.version.content_type == "binary/octet-stream"


def test_streamed_bodies_of_every_size_round_trip(store: ObjectStore, bucket: str) -> None:
    for size in (1, 64 * 1024, 64 * 1024 + 1, 3 * MIB + 17):
        data = os.urandom(size)
        chunks = [data[i : i + 100_000] for i in range(0, size, 100_000)]
        put = store.put_object(bucket, f"blob-{size}", iter(chunks))
        assert put.etag == md5(data)
        assert store.get_object(bucket, f"blob-{size}").read() == data


def test_overwrite_replaces_in_an_unversioned_bucket(store: ObjectStore, bucket: str) -> None:
    store.put_object(bucket, "k", b"one")
    store.put_object(bucket, "k", b"two" * 50_000)
    store.put_object(bucket, "k", b"three")
    assert store.get_object(bucket, "k").read() == b"three"
    versions = store.list_versions(bucket).versions
    assert [(v.key, v.version_id) for v in versions] == [("k", "null")]


def test_missing_things_raise_their_errors(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(NoSuchKey):
        store.get_object(bucket, "absent")
    with pytest.raises(NoSuchKey):
        store.head_object(bucket, "absent")
    with pytest.raises(NoSuchBucket):
        store.get_object("no-such-bucket", "k")
    with pytest.raises(NoSuchBucket):
        store.head_object("no-such-bucket", "k")
    with pytest.raises(NoSuchBucket):
        store.put_object("no-such-bucket", "k", b"x")
    with pytest.raises(NoSuchBucket):
        store.list_objects("no-such-bucket")


@pytest.mark.parametrize("key", ODD_KEYS, ids=lambda k: k[:24])
def test_odd_keys_are_stored_and_returned_exactly(adapter: Adapter, bucket: str, key: str) -> None:
    store = adapter.store
    body = f"content of {key}".encode()
    store.put_object(bucket, key, body)
    assert store.get_object(bucket, key).read() == body
    assert store.head_object(bucket, key).key == key
    keys, _ = all_objects(store, bucket)
    assert keys == [key]
    if adapter.root is not None:
        # Nothing under the store's root is named after a key: only its own layout exists.
        assert sorted(p.name for p in adapter.root.parent.iterdir()) == [adapter.root.name]
        for path in adapter.root.rglob("*"):
            rel = path.relative_to(adapter.root)
            assert rel.parts[0] in ("blobs", "tmp", "keys") or rel.name.startswith("objects.sqlite3"), rel
    store.delete_object(bucket, key)
    with pytest.raises(NoSuchKey):
        store.get_object(bucket, key)


def test_keys_longer_than_1024_bytes_are_refused(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(KeyTooLongError):
        store.put_object(bucket, "x" * 1025, b"x")
    with pytest.raises(KeyTooLongError):
        store.put_object(bucket, "é" * 513, b"x")


def test_ranges(store: ObjectStore, bucket: str) -> None:
    small = bytes(range(100))
    large = os.urandom(2 * MIB + 5)
    store.put_object(bucket, "small", small)
    store.put_object(bucket, "large", large)
    for key, data in (("small", small), ("large", large)):
        size = len(data)
        cases = {
            (0, 9): (0, 9),
            (10, None): (10, size - 1),
            (None, 7): (size - 7, size - 1),
            (5, 10**9): (5, size - 1),
        }
        for asked, (first, last) in cases.items():
            got = store.get_object(bucket, key, byte_range=asked)
            assert (got.first, got.last, got.partial) == (first, last, True)
            assert got.read() == data[first : last + 1]
            assert got.version.size == size
        with pytest.raises(InvalidRange):
            store.get_object(bucket, key, byte_range=(size, None))
    middle = store.get_object(bucket, "large", byte_range=(MIB - 3, MIB + 300_000))
    assert middle.read() == large[MIB - 3 : MIB + 300_001]


# Versions.


def test_versions_and_delete_markers(adapter: Adapter, store: ObjectStore, versioned: str) -> None:
    v1 = store.put_object(versioned, "book.json", b"first")
    v2 = store.put_object(versioned, "book.json", b"second")
    assert v1.version_id not in ("null", v2.version_id)
    assert store.get_object(versioned, "book.json").read() == b"second"
    assert store.get_object(versioned, "book.json", version_id=v1.version_id).read() == b"first"
    old = store.head_object(versioned, "book.json", version_id=v1.version_id)
    assert (old.version_id, old.is_latest) == (v1.version_id, False)

    deleted = store.delete_object(versioned, "book.json")
    assert deleted.delete_marker and deleted.version_id not in (None, v1.version_id, v2.version_id)
    with pytest.raises(NoSuchKey) as hidden:
        store.get_object(versioned, "book.json")
    assert hidden.value.delete_marker
    with pytest.raises(MethodNotAllowed) as refused:
        store.head_object(versioned, "book.json", version_id=deleted.version_id)
    marker = store.list_versions(versioned).versions[0]
    assert marker.is_delete_marker
    # S3 answers the 405 with the marker's Last-Modified (to the second on the wire); moto sends none.
    if not adapter.moto:
        assert refused.value.last_modified_ms is not None
        assert refused.value.last_modified_ms // 1000 == marker.last_modified_ms // 1000
    assert store.get_object(versioned, "book.json", version_id=v2.version_id).read() == b"second"
    assert all_objects(store, versioned) == ([], [])

    listed = store.list_versions(versioned).versions
    assert [(v.version_id, v.is_delete_marker, v.is_latest) for v in listed] == [
        (deleted.version_id, True, True),
        (v2.version_id, False, False),
        (v1.version_id, False, False),
    ]

    # Removing the marker by its id brings the object back; removing versions by id is final.
    assert (
        store.delete_object(versioned, "book.json", version_id=deleted.version_id).version_id
        == deleted.version_id
    )
    assert store.get_object(versioned, "book.json").read() == b"second"
    gone = store.delete_object(versioned, "book.json", version_id=v2.version_id)
    assert (gone.version_id, gone.delete_marker) == (v2.version_id, False)
    assert store.get_object(versioned, "book.json").read() == b"first"
    assert store.head_object(versioned, "book.json").version_id == v1.version_id
    with pytest.raises(NoSuchVersion):
        store.get_object(versioned, "book.json", version_id=v2.version_id)
    assert [v.version_id for v in store.list_versions(versioned).versions] == [v1.version_id]


def test_deletes_in_unversioned_buckets_remove_the_object(store: ObjectStore, bucket: str) -> None:
    store.put_object(bucket, "k", b"x")
    assert store.delete_object(bucket, "k") == store.delete_object(bucket, "never-there")
    assert store.list_versions(bucket).versions == []


def test_suspended_versioning_writes_the_null_version(adapter: Adapter, versioned: str) -> None:
    store = adapter.store
    kept = store.put_object(versioned, "k", b"kept")
    store.set_versioning(versioned, "Suspended")
    first = store.put_object(versioned, "k", b"null one")
    second = store.put_object(versioned, "k", b"null two")
    assert first.version_id == second.version_id == "null"
    assert store.get_object(versioned, "k").read() == b"null two"
    if adapter.moto:
        return  # moto drops the versions written before the suspension; S3 keeps them
    listed = store.list_versions(versioned).versions
    assert [(v.version_id, v.is_latest) for v in listed] == [("null", True), (kept.version_id, False)]
    marker = store.delete_object(versioned, "k")
    assert (marker.version_id, marker.delete_marker) == ("null", True)
    assert [v.is_delete_marker for v in store.list_versions(versioned).versions] == [True, False]
    assert store.get_object(versioned, "k", version_id=kept.version_id).read() == b"kept"


def test_a_write_while_suspended_replaces_a_null_version_that_newer_ones_follow(
    adapter: Adapter, versioned: str
) -> None:
    store = adapter.store
    store.set_versioning(versioned, "Suspended")
    store.put_object(versioned, "k", b"null one")
    store.set_versioning(versioned, "Enabled")
    newer = store.put_object(versioned, "k", b"newer")
    store.set_versioning(versioned, "Suspended")
    store.put_object(versioned, "k", b"null two")
    assert store.get_object(versioned, "k").read() == b"null two"
    assert store.get_object(versioned, "k", version_id="null").read() == b"null two"
    if adapter.moto:
        return  # moto drops the versions written before the suspension; S3 keeps them
    listed = store.list_versions(versioned).versions
    assert [(v.version_id, v.is_latest) for v in listed] == [("null", True), (newer.version_id, False)]


def test_tags_change_without_a_new_version(store: ObjectStore, versioned: str) -> None:
    v = store.put_object(versioned, "k", b"x", tags={"a": "1"})
    assert store.put_tags(versioned, "k", {"b": "2"}) == v.version_id
    assert store.head_object(versioned, "k").tags == {"b": "2"}
    assert len(store.list_versions(versioned).versions) == 1


# Listings.


def test_list_objects_with_prefix_delimiter_and_pages(store: ObjectStore, bucket: str) -> None:
    keys = ["a.txt", "b/1", "b/2", "b/c/3", "c", "d/x/y", "d/z", "e/", "é/1", "日本/2"]
    for key in keys:
        store.put_object(bucket, key, key.encode())
    assert all_objects(store, bucket) == (keys, [])
    assert all_objects(store, bucket, delimiter="/") == (["a.txt", "c"], ["b/", "d/", "e/", "é/", "日本/"])
    assert all_objects(store, bucket, prefix="b/", delimiter="/") == (["b/1", "b/2"], ["b/c/"])
    assert all_objects(store, bucket, prefix="d") == (["d/x/y", "d/z"], [])
    assert all_objects(store, bucket, start_after="c") == (keys[5:], [])
    # A common prefix at or before the marker is not listed again (how v1 NextMarker paging works).
    assert all_objects(store, bucket, delimiter="/", start_after="b/1") == (
        ["c"],
        ["d/", "e/", "é/", "日本/"],
    )
    assert all_objects(store, bucket, delimiter="/", start_after="b/") == (["c"], ["d/", "e/", "é/", "日本/"])
    for page_size in (1, 2, 3):
        assert all_objects(store, bucket, max_keys=page_size) == (keys, [])
        assert all_objects(store, bucket, delimiter="/", max_keys=page_size) == (
            ["a.txt", "c"],
            ["b/", "d/", "e/", "é/", "日本/"],
        )
    page = store.list_objects(bucket, max_keys=2)
    assert [o.key for o in page.objects] == ["a.txt", "b/1"] and page.is_truncated
    listed = page.objects[0]
    assert (listed.etag, listed.size) == (md5(b"a.txt"), 5)
    assert listed.last_modified_ms == store.head_object(bucket, "a.txt").last_modified_ms


def test_a_continuation_token_not_of_this_store_is_refused(adapter: Adapter, bucket: str) -> None:
    if adapter.moto:
        pytest.skip(
            "moto fails with a TypeError of its own on a token it did not issue; S3 says InvalidArgument"
        )
    store = adapter.store
    store.put_object(bucket, "a", b"a")
    for token in ("_w==", "abc"):  # not UTF-8 once decoded; not base64 at all
        with pytest.raises(InvalidArgument):
            store.list_objects(bucket, token=token)


def test_list_versions_pages(store: ObjectStore, versioned: str) -> None:
    expected = []
    for key in ("a", "b", "c/d", "c/e"):
        ids = [store.put_object(versioned, key, f"{key}{n}".encode()).version_id for n in range(3)]
        expected += [(key, version_id) for version_id in reversed(ids)]  # newest first
    collected = []
    key_marker, vid_marker = "", ""
    while True:
        page = store.list_versions(versioned, key_marker=key_marker, version_id_marker=vid_marker, max_keys=2)
        collected += [(v.key, v.version_id) for v in page.versions]
        if not page.is_truncated:
            break
        key_marker, vid_marker = page.next_key_marker or "", page.next_version_id_marker or ""
    assert collected == expected
    rolled = store.list_versions(versioned, delimiter="/")
    assert rolled.common_prefixes == ["c/"]
    assert {v.key for v in rolled.versions} == {"a", "b"}
    entries: list[str] = []
    key_marker, vid_marker = "", ""
    while True:
        page = store.list_versions(
            versioned, delimiter="/", key_marker=key_marker, version_id_marker=vid_marker, max_keys=1
        )
        entries += [v.key for v in page.versions] + page.common_prefixes
        if not page.is_truncated:
            break
        key_marker, vid_marker = page.next_key_marker or "", page.next_version_id_marker or ""
    assert entries == ["a", "a", "a", "b", "b", "b", "c/"]


def test_a_deleted_version_id_marker_still_marks_a_position(adapter: Adapter, versioned: str) -> None:
    if adapter.moto:
        pytest.skip("moto lists nothing after a version id it no longer holds; S3 resumes after its place")
    store = adapter.store
    ids = [store.put_object(versioned, "a", b"x").version_id for _ in range(4)]
    store.put_object(versioned, "b", b"y")
    page = store.list_versions(versioned, max_keys=2)
    assert [v.version_id for v in page.versions] == [ids[3], ids[2]]
    store.delete_object(versioned, "a", version_id=ids[2])
    rest = store.list_versions(
        versioned, key_marker=page.next_key_marker or "", version_id_marker=page.next_version_id_marker or ""
    )
    assert [(v.key, v.version_id) for v in rest.versions][:2] == [("a", ids[1]), ("a", ids[0])]
    assert [v.key for v in rest.versions] == ["a", "a", "b"]


# Multipart uploads.


def test_list_uploads(store: ObjectStore, bucket: str) -> None:
    first = store.create_upload(bucket, "b/first")
    second = store.create_upload(bucket, "a/second")
    third = store.create_upload(bucket, "b/first")
    found = store.list_uploads(bucket)
    assert [u.key for u in found] == ["a/second", "b/first", "b/first"]
    assert found[0].upload_id == second and {u.upload_id for u in found[1:]} == {first, third}
    assert all(u.initiated_ms > 0 for u in found)
    assert [u.upload_id for u in store.list_uploads(bucket, "a/")] == [second]
    store.abort_upload(bucket, "a/second", second)
    assert [u.key for u in store.list_uploads(bucket)] == ["b/first", "b/first"]


def test_multipart_upload_assembles_the_parts(store: ObjectStore, versioned: str) -> None:
    part1, part2 = os.urandom(5 * MIB), os.urandom(1000)
    upload = store.create_upload(versioned, "big.bin", content_type="application/x-big", metadata={"m": "1"})
    p2 = store.upload_part(versioned, "big.bin", upload, 2, part2)
    p1 = store.upload_part(versioned, "big.bin", upload, 1, part1)
    assert (p1.etag, p1.size, p2.etag, p2.size) == (md5(part1), len(part1), md5(part2), len(part2))
    assert [(p.number, p.etag, p.size) for p in store.list_parts(versioned, "big.bin", upload)] == [
        (1, md5(part1), len(part1)),
        (2, md5(part2), len(part2)),
    ]
    with pytest.raises(NoSuchKey):
        store.head_object(versioned, "big.bin")  # nothing visible before completion
    done = store.complete_upload(versioned, "big.bin", upload, [(1, p1.etag), (2, p2.etag)])
    expected_etag = hashlib.md5(bytes.fromhex(md5(part1)) + bytes.fromhex(md5(part2))).hexdigest() + "-2"
    assert done.etag == expected_etag
    assert done.size == len(part1) + len(part2)
    got = store.get_object(versioned, "big.bin")
    assert got.read() == part1 + part2
    assert (got.version.content_type, got.version.metadata) == ("application/x-big", {"m": "1"})
    across = store.get_object(versioned, "big.bin", byte_range=(5 * MIB - 10, 5 * MIB + 9))
    assert across.read() == part1[-10:] + part2[:10]
    with pytest.raises(NoSuchUpload):
        store.list_parts(versioned, "big.bin", upload)


def test_part_ranges_of_a_multipart_version(adapter: Adapter, versioned: str) -> None:
    if adapter.moto:
        pytest.skip("moto answers a HEAD by PartNumber without its Content-Range; S3 gives it")
    store = adapter.store
    part1, part2 = os.urandom(5 * MIB), os.urandom(1000)
    upload = store.create_upload(versioned, "big.bin")
    p1 = store.upload_part(versioned, "big.bin", upload, 1, part1)
    p2 = store.upload_part(versioned, "big.bin", upload, 2, part2)
    done = store.complete_upload(versioned, "big.bin", upload, [(1, p1.etag), (2, p2.etag)])
    assert store.part_range(versioned, "big.bin", 1) == (0, len(part1) - 1)
    assert store.part_range(versioned, "big.bin", 2, version_id=done.version_id) == (
        len(part1),
        len(part1) + len(part2) - 1,
    )


def test_multipart_refusals(adapter: Adapter, bucket: str) -> None:
    store = adapter.store
    upload = store.create_upload(bucket, "k")
    small = store.upload_part(bucket, "k", upload, 1, b"tiny")
    last = store.upload_part(bucket, "k", upload, 2, b"end")
    with pytest.raises(EntityTooSmall):
        store.complete_upload(bucket, "k", upload, [(1, small.etag), (2, last.etag)])
    with pytest.raises(InvalidPart):
        store.complete_upload(bucket, "k", upload, [(1, md5(b"other"))])
    with pytest.raises(InvalidPart):
        store.complete_upload(bucket, "k", upload, [(3, small.etag)])
    with pytest.raises(InvalidPartOrder):
        store.complete_upload(bucket, "k", upload, [(2, last.etag), (1, small.etag)])
    store.abort_upload(bucket, "k", upload)
    with pytest.raises(NoSuchUpload):
        store.list_parts(bucket, "k", upload)
    if not adapter.moto:  # moto fails with a KeyError of its own on these
        with pytest.raises(NoSuchUpload):
            store.upload_part(bucket, "k", upload, 3, b"x")
        with pytest.raises(NoSuchUpload):
            store.complete_upload(bucket, "k", upload, [(1, small.etag)])
    with pytest.raises(NoSuchKey):
        store.head_object(bucket, "k")


def test_a_single_small_part_completes(store: ObjectStore, bucket: str) -> None:
    upload = store.create_upload(bucket, "one-part")
    part = store.upload_part(bucket, "one-part", upload, 1, b"only")
    done = store.complete_upload(bucket, "one-part", upload, [(1, f'"{part.etag}"')])
    assert done.etag.endswith("-1")
    assert store.get_object(bucket, "one-part").read() == b"only"


# Bucket configurations.


def test_replication_configuration_round_trips(store: ObjectStore, versioned: str) -> None:
    with pytest.raises(ReplicationConfigurationNotFoundError):
        store.get_replication(versioned)
    stored = store.put_replication(versioned, ReplicationConfiguration.from_json(SEED_REPLICATION))
    assert stored.rules[0].id  # S3 names a rule that came without an ID
    got = store.get_replication(versioned)
    assert got == stored
    rule = got.rules[0]
    assert (rule.status, rule.priority, rule.delete_marker_replication) == ("Enabled", 1, "Disabled")
    assert rule.destination_bucket_name == "bookstore-web-sg"
    assert rule.filter is not None and rule.filter.prefix is None and not rule.filter.tags
    store.delete_replication(versioned)
    with pytest.raises(ReplicationConfigurationNotFoundError):
        store.get_replication(versioned)


def test_replication_configuration_needs_versioning(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(InvalidRequest):
        store.put_replication(bucket, ReplicationConfiguration.from_json(SEED_REPLICATION))


def test_refused_replication_configurations(store: ObjectStore, versioned: str) -> None:
    rule: dict[str, Any] = SEED_REPLICATION["Rules"][0]
    malformed = [
        {"Rules": [rule]},
        {"Role": "r", "Rules": []},
        {"Role": "r", "Rules": [{**rule, "Status": "Maybe"}]},
        {"Role": "r", "Rules": [{k: v for k, v in rule.items() if k != "Destination"}]},
        {"Role": "r", "Rules": [{**rule, "Filter": {"Prefix": "a", "Tag": {"Key": "k", "Value": "v"}}}]},
        {"Role": "r", "Rules": [{**rule, "Priority": "high"}]},
        {"Role": "r", "Rules": [{**rule, "Surprise": 1}]},
    ]
    for doc in malformed:
        with pytest.raises(MalformedXML):
            ReplicationConfiguration.from_json(doc)
    refused = [
        ({**rule, "Destination": {"Bucket": "bookstore-web-sg"}}, InvalidArgument),
        ({**rule, "Destination": {"Bucket": f"arn:aws:s3:::{versioned}"}}, InvalidRequest),
        ({k: v for k, v in rule.items() if k != "DeleteMarkerReplication"}, InvalidRequest),
        (
            {
                **rule,
                "Filter": {"Tag": {"Key": "k", "Value": "v"}},
                "DeleteMarkerReplication": {"Status": "Enabled"},
            },
            InvalidRequest,
        ),
    ]
    for bad_rule, error in refused:
        config = ReplicationConfiguration.from_json({"Role": "r", "Rules": [bad_rule]})
        with pytest.raises(error):
            store.put_replication(versioned, config)
    twins = ReplicationConfiguration.from_json(
        {"Role": "r", "Rules": [{**rule, "ID": "same"}, {**rule, "ID": "same"}]}
    )
    with pytest.raises(InvalidArgument):
        store.put_replication(versioned, twins)
    with pytest.raises(ReplicationConfigurationNotFoundError):
        store.get_replication(versioned)


def test_website_configuration_round_trips(store: ObjectStore, bucket: str) -> None:
    with pytest.raises(NoSuchWebsiteConfiguration):
        store.get_website(bucket)
    config = WebsiteConfiguration(index_document="index.html", error_document="error.html")
    store.put_website(bucket, config)
    assert store.get_website(bucket) == config
    with pytest.raises(InvalidArgument):
        store.put_website(bucket, WebsiteConfiguration(index_document="a/index.html"))
    store.delete_website(bucket)
    with pytest.raises(NoSuchWebsiteConfiguration):
        store.get_website(bucket)


# Named bucket configurations (policy, CORS, lifecycle): stored as given, per bucket.

POLICY = json.dumps(
    {
        "Version": "2012-10-17",
        "Statement": [
            {
                "Effect": "Allow",
                "Principal": "*",
                "Action": "s3:GetObject",
                "Resource": "arn:aws:s3:::books/*",
            }
        ],
    }
)
CORS = json.dumps(
    {"CORSRules": [{"ID": "shop", "AllowedMethods": ["GET"], "AllowedOrigins": ["https://shop.example"]}]}
)
LIFECYCLE = json.dumps(
    {
        "Rules": [
            {"ID": "tmp", "Filter": {"Prefix": "tmp/"}, "Status": "Enabled", "Expiration": {"Days": 7}},
            {
                "ID": "dated",
                "Filter": {"Prefix": "old/"},
                "Status": "Enabled",
                "Expiration": {"Date": "2030-01-01T00:00:00.000Z"},
            },
        ]
    }
)


@pytest.mark.parametrize(("kind", "document"), [("policy", POLICY), ("cors", CORS), ("lifecycle", LIFECYCLE)])
def test_named_configurations_round_trip(store: ObjectStore, bucket: str, kind: str, document: str) -> None:
    assert store.get_config(bucket, kind) is None
    store.delete_config(bucket, kind)  # deleting none is no error
    store.put_config(bucket, kind, document)
    stored = store.get_config(bucket, kind)
    assert stored is not None
    assert json.loads(stored) == json.loads(document)
    store.delete_config(bucket, kind)
    assert store.get_config(bucket, kind) is None


def test_named_configurations_are_per_bucket_and_go_with_it(store: ObjectStore, bucket: str) -> None:
    store.create_bucket("other")
    store.put_config(bucket, "cors", CORS)
    assert store.get_config("other", "cors") is None
    store.delete_bucket(bucket)
    with pytest.raises(NoSuchBucket):
        store.get_config(bucket, "cors")
    with pytest.raises(NoSuchBucket):
        store.put_config(bucket, "cors", CORS)
    store.create_bucket(bucket)
    assert store.get_config(bucket, "cors") is None


def test_uploads_started_before(adapter: Adapter, bucket: str) -> None:
    store = adapter.store
    first = store.create_upload(bucket, "b/first")
    second = store.create_upload(bucket, "a/second")
    now = time.time_ns() // 1_000_000
    if not adapter.moto:  # moto says every upload was initiated in 2010; S3 gives the real time
        assert store.uploads_started_before(bucket, now - 3_600_000) == []
    found = store.uploads_started_before(bucket, now + 3_600_000)
    assert found == [("a/second", second), ("b/first", first)]
    store.abort_upload(bucket, "b/first", first)
    assert store.uploads_started_before(bucket, now + 3_600_000) == [("a/second", second)]


def test_a_delete_marker_not_to_replicate_is_never_queued(adapter: Adapter, versioned: str) -> None:
    if adapter.manages_replication:
        return  # S3 decides replication itself (and never replicates its lifecycle's markers)
    store = adapter.store
    store.create_bucket("dest")
    config = {
        "Role": "r",
        "Rules": [
            {
                "ID": "all",
                "Status": "Enabled",
                "Priority": 1,
                "Filter": {},
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "Destination": {"Bucket": "arn:aws:s3:::dest"},
            }
        ],
    }
    store.put_replication(versioned, ReplicationConfiguration.from_json(config))
    written = store.put_object(versioned, "a", b"x")
    store.set_replication_status(versioned, "a", written.version_id, "COMPLETED")
    quiet = store.delete_object(versioned, "a", replicate=False)
    assert quiet.delete_marker
    assert store.pending_replications() == []
    loud = store.delete_object(versioned, "a")
    assert [v.version_id for v in store.pending_replications()] == [loud.version_id]


# Replication state.


def test_replication_state_follows_the_rules(adapter: Adapter, versioned: str) -> None:
    store = adapter.store
    config = {
        "Role": "r",
        "Rules": [
            {
                "ID": "covers",
                "Status": "Enabled",
                "Priority": 2,
                "Filter": {"Prefix": "covers/"},
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "Destination": {"Bucket": "arn:aws:s3:::copies"},
            },
            {
                "ID": "tagged",
                "Status": "Enabled",
                "Priority": 1,
                "Filter": {"And": {"Prefix": "", "Tags": [{"Key": "replicate", "Value": "yes"}]}},
                "DeleteMarkerReplication": {"Status": "Disabled"},
                "Destination": {"Bucket": "arn:aws:s3:::copies"},
            },
        ],
    }
    before = store.put_object(versioned, "covers/old.svg", b"before the rule")
    store.put_replication(versioned, ReplicationConfiguration.from_json(config))
    if adapter.manages_replication:
        for call in (
            lambda: store.pending_replications(),
            lambda: store.set_replication_status(versioned, "k", "v", "COMPLETED"),
            lambda: store.put_replica(before, b""),
        ):
            with pytest.raises(NotSupported):
                call()
        assert issubclass(NotSupported, StorageError)
        return
    cover = store.put_object(versioned, "covers/new.svg", b"<svg/>")
    other = store.put_object(versioned, "notes.txt", b"not replicated")
    tagged = store.put_object(versioned, "notes2.txt", b"tagged", tags={"replicate": "yes"})
    assert (before.replication_status, cover.replication_status) == (None, "PENDING")
    assert (other.replication_status, tagged.replication_status) == (None, "PENDING")
    assert store.head_object(versioned, "covers/new.svg").replication_status == "PENDING"

    cover_marker = store.delete_object(versioned, "covers/new.svg")
    tagged_marker = store.delete_object(versioned, "notes2.txt")
    by_id = store.delete_object(versioned, "covers/old.svg", version_id=before.version_id)
    pending = [(v.key, v.version_id, v.is_delete_marker) for v in store.pending_replications()]
    assert pending == [
        ("covers/new.svg", cover.version_id, False),
        ("notes2.txt", tagged.version_id, False),
        ("covers/new.svg", cover_marker.version_id, True),
    ]
    assert tagged_marker.version_id not in {p[1] for p in pending}
    assert by_id.version_id not in {p[1] for p in pending}

    store.set_replication_status(versioned, "covers/new.svg", cover.version_id, "COMPLETED")
    store.set_replication_status(
        versioned, "notes2.txt", tagged.version_id, "FAILED", "destination unreachable"
    )
    done = store.head_object(versioned, "covers/new.svg", version_id=cover.version_id)
    failed = store.head_object(versioned, "notes2.txt", version_id=tagged.version_id)
    assert done.replication_status == "COMPLETED"
    assert (failed.replication_status, failed.replication_reason) == ("FAILED", "destination unreachable")
    assert [v.version_id for v in store.pending_replications()] == [cover_marker.version_id]
    with pytest.raises(NoSuchVersion):
        store.set_replication_status(versioned, "covers/new.svg", "0" * 26, "COMPLETED")


def test_metadata_beyond_ascii_is_kept_as_text(adapter: Adapter, bucket: str) -> None:
    # The S3 API hands the store text; the S3 adapter sends it as RFC 2047 encoded words (botocore takes
    # ASCII only) and reads them back as text.
    metadata = {"title": "Café 東京", "plain": "ok", "literal": "=?x-none?B?AA==?="}
    adapter.store.put_object(bucket, "k", b"x", metadata=metadata)
    assert adapter.store.head_object(bucket, "k").metadata == metadata
    assert adapter.store.get_object(bucket, "k").version.metadata == metadata


def test_replicas_keep_id_times_and_metadata(adapter: Adapter, versioned: str) -> None:
    store = adapter.store
    source = store.put_object(
        versioned,
        "covers/a.svg",
        b"<svg/>",
        content_type="image/svg+xml",
        metadata={"m": "1"},
        tags={"t": "2"},
    )
    if adapter.manages_replication:
        with pytest.raises(NotSupported):
            store.put_replica(replace(source, bucket="copies"), b"<svg/>")
        return
    store.create_bucket("copies")
    store.set_versioning("copies", "Enabled")
    replica = store.put_replica(replace(source, bucket="copies"), b"<svg/>")
    assert replica.replication_status == "REPLICA"
    got = store.get_object("copies", "covers/a.svg", version_id=source.version_id)
    assert got.read() == b"<svg/>"
    v = got.version
    assert (v.version_id, v.last_modified_ms, v.etag) == (
        source.version_id,
        source.last_modified_ms,
        source.etag,
    )
    assert (v.content_type, v.metadata, v.tags, v.replication_status) == (
        "image/svg+xml",
        {"m": "1"},
        {"t": "2"},
        "REPLICA",
    )
    assert store.pending_replications() == []
    # Idempotent: a retried copy changes nothing.
    assert store.put_replica(replace(source, bucket="copies"), b"<svg/>").version_id == source.version_id
    assert len(store.list_versions("copies").versions) == 1

    # A replica older than what the destination holds does not become the latest.
    newer = store.put_object("copies", "covers/a.svg", b"newer here")
    older = ObjectVersion(
        "copies", "covers/a.svg", "00000000000000000000000000", source.last_modified_ms - 1000, md5(b"old"), 3
    )
    store.put_replica(older, b"old")
    assert store.get_object("copies", "covers/a.svg").version.version_id == newer.version_id
    assert [v.version_id for v in store.list_versions("copies").versions] == [
        newer.version_id,
        source.version_id,
        older.version_id,
    ]
    marker = ObjectVersion(
        "copies", "covers/a.svg", "7" + "Z" * 25, newer.last_modified_ms + 1, is_delete_marker=True
    )
    store.put_replica(marker, b"")
    with pytest.raises(NoSuchKey):
        store.get_object("copies", "covers/a.svg")


def test_a_replica_keeps_the_parts_of_its_multipart_source(adapter: Adapter, versioned: str) -> None:
    if adapter.manages_replication:
        pytest.skip("S3 copies replicas itself")
    store = adapter.store
    part1, part2 = os.urandom(5 * MIB), os.urandom(1000)
    upload = store.create_upload(versioned, "big.bin", checksum=("SHA256", "COMPOSITE"))
    done = []
    for number, part in enumerate((part1, part2), start=1):
        checksum = Checksum("SHA256", checksums.of(part, "SHA256"))
        done.append(
            (number, store.upload_part(versioned, "big.bin", upload, number, part, checksum=checksum).etag)
        )
    source = store.complete_upload(versioned, "big.bin", upload, done)
    parts = store.completed_parts(versioned, "big.bin", version_id=source.version_id)
    store.create_bucket("copies")
    store.set_versioning("copies", "Enabled")
    replica = replace(source, bucket="copies")
    # Parts that do not fit the version are refused, and nothing is written.
    with pytest.raises(InvalidRequest):
        store.put_replica(replica, part1 + part2, parts[:1])
    with pytest.raises(InvalidRequest):
        store.put_replica(replica, part1 + part2, [replace(parts[0], size=1), parts[1]])
    assert store.list_versions("copies").versions == []
    # The content arrives whole; the part sizes and checksums say where its parts lie, as at the source.
    store.put_replica(replica, part1 + part2, parts)
    assert store.head_object("copies", "big.bin").parts_count == 2
    assert store.part_range("copies", "big.bin", 1) == (0, len(part1) - 1)
    assert store.part_range("copies", "big.bin", 2, version_id=source.version_id) == (
        len(part1),
        len(part1) + len(part2) - 1,
    )
    copied = store.completed_parts("copies", "big.bin")
    assert [(p.number, p.size, p.checksum, p.checksum_algorithm) for p in copied] == [
        (n, len(part), checksums.of(part, "SHA256"), "SHA256")
        for n, part in enumerate((part1, part2), start=1)
    ]
    # Without them (a source region from before), the replica knows only the count.
    store.put_replica(replace(source, bucket="copies", key="whole.bin"), part1 + part2)
    assert store.head_object("copies", "whole.bin").parts_count == 2
    assert store.part_range("copies", "whole.bin", 1) is None
    assert store.completed_parts("copies", "whole.bin") == []


def test_replica_content_must_match_its_etag(adapter: Adapter, versioned: str) -> None:
    if adapter.manages_replication:
        pytest.skip("S3 copies replicas itself")
    source = adapter.store.put_object(versioned, "k", b"right")
    adapter.store.create_bucket("copies")
    adapter.store.set_versioning("copies", "Enabled")
    with pytest.raises(BadDigest):
        adapter.store.put_replica(replace(source, bucket="copies"), b"wrong")
    assert adapter.store.list_versions("copies").versions == []


def test_replicas_in_a_batch_are_refused_one_by_one(adapter: Adapter, versioned: str) -> None:
    store = adapter.store
    a = store.put_object(versioned, "a", b"alpha")
    b = store.put_object(versioned, "b", b"beta")
    if adapter.manages_replication:
        with pytest.raises(NotSupported):
            store.put_replicas([Replica(replace(a, bucket="copies"), b"alpha")])
        return
    store.create_bucket("copies")
    store.set_versioning("copies", "Enabled")
    marker = ObjectVersion("copies", "a", "7" + "Z" * 25, a.last_modified_ms + 1, is_delete_marker=True)
    outcomes = store.put_replicas(
        [
            Replica(replace(a, bucket="copies"), b"alpha"),
            Replica(replace(b, bucket="copies"), b"not beta"),
            Replica(replace(b, bucket="nowhere"), b"beta"),
            Replica(marker, b""),
            Replica(replace(b, bucket="copies"), b"beta"),
        ]
    )
    assert [type(o.error).__name__ if o.error else o.value.version_id for o in outcomes] == [
        a.version_id,
        "BadDigest",
        "NoSuchBucket",
        marker.version_id,
        b.version_id,
    ]
    # The ones refused left nothing behind; the others are all there, the marker latest for "a".
    assert sorted((v.key, v.version_id) for v in store.list_versions("copies").versions) == sorted(
        [("a", a.version_id), ("a", marker.version_id), ("b", b.version_id)]
    )
    with pytest.raises(NoSuchKey):
        store.get_object("copies", "a")
    assert store.get_object("copies", "b").read() == b"beta"
    # Idempotent, as put_replica is.
    again = store.put_replicas([Replica(replace(a, bucket="copies"), b"alpha"), Replica(marker, b"")])
    assert [o.error for o in again] == [None, None]
    assert len(store.list_versions("copies").versions) == 3


def test_replicas_in_a_batch_keep_their_parts_and_seals(adapter: Adapter, versioned: str) -> None:
    # What put_replica takes beside a version travels with each replica of a batch: a multipart version's
    # parts and an SSE-C version's seal (its content then sealed), each checked for that replica alone.
    if adapter.manages_replication:
        pytest.skip("S3 copies replicas itself")
    store = adapter.store
    key = _customer_key(bytes(range(32)))
    # A multipart version can be small: the last part has no minimum size, so a one-part upload is one.
    chunk = b"a small multipart version"
    upload = store.create_upload(versioned, "one-part", checksum=("SHA256", "COMPOSITE"))
    checksum = Checksum("SHA256", checksums.of(chunk, "SHA256"))
    etag = store.upload_part(versioned, "one-part", upload, 1, chunk, checksum=checksum).etag
    multipart = store.complete_upload(versioned, "one-part", upload, [(1, etag)])
    parts = tuple(store.completed_parts(versioned, "one-part", version_id=multipart.version_id))
    secret = store.put_object(versioned, "secret", b"for the key holder", customer_key=key)
    seal, body = store.read_sealed(versioned, "secret", secret.version_id)
    sealed = b"".join(body)
    store.create_bucket("copies")
    store.set_versioning("copies", "Enabled")
    outcomes = store.put_replicas(
        [
            Replica(replace(multipart, bucket="copies"), chunk, parts),
            Replica(replace(secret, bucket="copies"), sealed, (), seal),
            Replica(replace(secret, bucket="copies", key="no-seal"), sealed),
            Replica(
                replace(multipart, bucket="copies", key="bad-parts"), chunk, (replace(parts[0], size=1),)
            ),
        ]
    )
    assert [type(o.error).__name__ if o.error else None for o in outcomes] == [
        None,
        None,
        "InvalidRequest",
        "InvalidRequest",
    ]
    assert sorted(v.key for v in store.list_versions("copies").versions) == ["one-part", "secret"]
    assert store.head_object("copies", "one-part").parts_count == 1
    assert store.part_range("copies", "one-part", 1) == (0, len(chunk) - 1)
    assert [(p.number, p.size, p.checksum) for p in store.completed_parts("copies", "one-part")] == [
        (1, len(chunk), checksum.value)
    ]
    written = outcomes[1].value
    assert (written.encryption, written.sse_key_md5, written.etag) == ("SSE-C", key.md5, secret.etag)
    assert store.get_object("copies", "secret", customer_key=key).read() == b"for the key holder"
    with pytest.raises(InvalidRequest):
        store.head_object("copies", "secret")


def test_statuses_set_together_each_stand_alone(adapter: Adapter, versioned: str) -> None:
    store = adapter.store
    if adapter.manages_replication:
        with pytest.raises(NotSupported):
            store.set_replication_statuses([StatusChange(versioned, "k", "v", "COMPLETED")])
        return
    store.put_replication(versioned, ReplicationConfiguration.from_json(SEED_REPLICATION))
    a = store.put_object(versioned, "a", b"a")
    b = store.put_object(versioned, "b", b"b")
    c = store.put_object(versioned, "c", b"c")
    outcomes = store.set_replication_statuses(
        [
            StatusChange(versioned, "a", a.version_id, "COMPLETED"),
            StatusChange(versioned, "b", "0" * 26, "COMPLETED"),
            StatusChange(versioned, "b", b.version_id, "FAILED", "refused"),
        ]
    )
    assert [type(o.error).__name__ if o.error else None for o in outcomes] == [None, "NoSuchVersion", None]
    assert store.head_object(versioned, "a").replication_status == "COMPLETED"
    failed = store.head_object(versioned, "b")
    assert (failed.replication_status, failed.replication_reason) == ("FAILED", "refused")
    assert [v.version_id for v in store.pending_replications()] == [c.version_id]


# Durability of the local store: real processes killed with SIGKILL.

_WRITER = textwrap.dedent(
    """
    import sys, time
    from pathlib import Path
    from bookstore.storage.local import LocalObjectStore

    class Clock:
        def now_ms(self):
            return time.time_ns() // 1_000_000

    store = LocalObjectStore(Path(sys.argv[1]), "eu-west-1", Clock())
    if sys.argv[2] == "acked":
        store.create_bucket("bkt")
        for i in range(10_000):
            size = 100_000 if i % 3 == 0 else 100
            store.put_object("bkt", f"k{i}", bytes([i % 256]) * size)
            print(i, flush=True)
    else:
        def endless():
            yield b"x" * 1_000_000
            print("writing", flush=True)
            while True:
                time.sleep(0.05)
                yield b"y" * 1000
        store.put_object("bkt", "half", endless())
    """
)


def _writer(root: Path, mode: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-c", _WRITER, str(root), mode],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, "PYTHONPATH": str(Path(__file__).parents[2] / "src")},
    )


def test_acknowledged_puts_survive_kill_9_and_half_writes_never_show(tmp_path: Path) -> None:
    root = tmp_path / "store"
    writer = _writer(root, "acked")
    assert writer.stdout is not None
    acked = -1
    while acked < 60:
        line = writer.stdout.readline()
        assert line, "the writer died"
        acked = int(line)
    os.kill(writer.pid, signal.SIGKILL)
    writer.wait()
    # The writer may have acknowledged more PUTs than were read before the kill: they are in the pipe.
    for line in writer.stdout.read().split():
        acked = int(line)

    store = LocalObjectStore(root, REGION, WallClock())
    for i in range(acked + 1):
        size = 100_000 if i % 3 == 0 else 100
        assert store.get_object("bkt", f"k{i}").read() == bytes([i % 256]) * size
    keys, _ = all_objects(store, "bkt")
    assert acked + 1 <= len(keys) <= acked + 2  # at most the one PUT in flight when it died
    store.close()

    half = _writer(root, "half")
    assert half.stdout is not None
    assert half.stdout.readline().strip() == "writing"
    assert any((root / "tmp").iterdir())  # the half-written upload is on disk...
    os.kill(half.pid, signal.SIGKILL)
    half.wait()
    store = LocalObjectStore(root, REGION, WallClock())
    with pytest.raises(NoSuchKey):  # ...but never visible, and cleaned up at the next start
        store.head_object("bkt", "half")
    assert not any((root / "tmp").iterdir())
    blob_files = [p for p in (root / "blobs").rglob("*") if p.is_file()]
    assert len(blob_files) == len([k for k in keys if int(k[1:]) % 3 == 0])
    store.close()


def test_state_survives_a_reopen(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path, REGION, WallClock())
    store.create_bucket("bkt")
    store.set_versioning("bkt", "Enabled")
    config = store.put_replication("bkt", ReplicationConfiguration.from_json(SEED_REPLICATION))
    store.put_website("bkt", WebsiteConfiguration(index_document="index.html"))
    v = store.put_object("bkt", "k", b"x" * 200_000)
    store.close()
    again = LocalObjectStore(tmp_path, REGION, WallClock())
    assert again.get_bucket("bkt").versioning == "Enabled"
    assert again.get_replication("bkt") == config
    assert again.get_website("bkt").index_document == "index.html"
    assert again.get_object("bkt", "k").version.version_id == v.version_id
    assert again.pending_replications()[0].version_id == v.version_id
    later = again.put_object("bkt", "k", b"later")
    assert later.version_id > v.version_id
    again.close()


# Checksums and SSE-C (issue 14). S3 computes its own checksums, so the S3 adapter is left out of those.


def test_a_version_keeps_its_checksum_and_an_upload_composes_one(adapter: Adapter, bucket: str) -> None:
    if adapter.moto:
        pytest.skip("S3 computes and keeps its own checksums: the adapter does not send ours")
    store = adapter.store
    body = b"checksummed"
    given = Checksum("SHA256", checksums.of(body, "SHA256"))
    assert store.put_object(bucket, "k", body, checksum=given).checksum == given
    assert store.head_object(bucket, "k").checksum == given
    upload_id = store.create_upload(bucket, "big", checksum=("CRC32C", "FULL_OBJECT"))
    parts = [b"a" * 5 * 1024 * 1024, b"tail"]
    with pytest.raises(InvalidRequest):
        store.upload_part(bucket, "big", upload_id, 1, parts[0], checksum=Checksum("CRC32", "AAAAAA=="))
    done = []
    for number, part in enumerate(parts, start=1):
        checksum = Checksum("CRC32C", checksums.of(part, "CRC32C"))
        done.append(
            (number, store.upload_part(bucket, "big", upload_id, number, part, checksum=checksum).etag)
        )
    version = store.complete_upload(bucket, "big", upload_id, done)
    assert version.checksum == Checksum("CRC32C", checksums.of(b"".join(parts), "CRC32C"), "FULL_OBJECT")
    listed = store.completed_parts(bucket, "big")
    assert [(p.number, p.size, p.checksum, p.checksum_algorithm) for p in listed] == [
        (n, len(part), checksums.of(part, "CRC32C"), "CRC32C") for n, part in enumerate(parts, start=1)
    ]
    store.put_object(bucket, "small", b"one piece")
    assert store.completed_parts(bucket, "small") == []


def test_complete_checks_the_checksum_the_client_expects(adapter: Adapter, bucket: str) -> None:
    if adapter.moto:
        pytest.skip("S3 computes and keeps its own checksums: the adapter does not send ours")
    store = adapter.store
    upload_id = store.create_upload(bucket, "k", checksum=("SHA256", "COMPOSITE"))
    part = b"only part"
    etag = store.upload_part(
        bucket, "k", upload_id, 1, part, checksum=Checksum("SHA256", checksums.of(part, "SHA256"))
    ).etag
    with pytest.raises(BadDigest):
        store.complete_upload(bucket, "k", upload_id, [(1, etag)], expected=Checksum("SHA256", "AAAA"))
    with pytest.raises(BadDigest):
        store.complete_upload(bucket, "k", upload_id, [(1, etag)], expected=Checksum("CRC32", "AAAAAA=="))
    with pytest.raises(NoSuchKey):
        store.head_object(bucket, "k")
    whole = checksums.of(base64.b64decode(checksums.of(part, "SHA256")), "SHA256")
    version = store.complete_upload(bucket, "k", upload_id, [(1, etag)], expected=Checksum("SHA256", whole))
    assert version.checksum == Checksum("SHA256", f"{whole}-1", "COMPOSITE")


def test_an_sse_c_version_needs_its_key(adapter: Adapter, bucket: str) -> None:
    if adapter.moto:
        pytest.skip("moto does not check SSE-C keys")
    store = adapter.store
    raw = bytes(range(32))
    key = CustomerKey(raw, base64.b64encode(hashlib.md5(raw).digest()).decode())
    other = CustomerKey(bytes(32), base64.b64encode(hashlib.md5(bytes(32)).digest()).decode())
    written = store.put_object(bucket, "secret", b"for the key holder", customer_key=key)
    assert (written.encryption, written.sse_key_md5) == ("SSE-C", key.md5)
    assert store.get_object(bucket, "secret", customer_key=key).read() == b"for the key holder"
    with pytest.raises(InvalidRequest):
        store.get_object(bucket, "secret")
    with pytest.raises(AccessDenied):
        store.head_object(bucket, "secret", customer_key=other)
    store.put_object(bucket, "plain", b"plain")
    assert store.head_object(bucket, "plain").encryption == "AES256"
    with pytest.raises(InvalidRequest):
        store.get_object(bucket, "plain", customer_key=key)


def _customer_key(raw: bytes) -> CustomerKey:
    return CustomerKey(raw, base64.b64encode(hashlib.md5(raw).digest()).decode())


def test_an_sse_c_version_replicates_sealed(adapter: Adapter, versioned: str) -> None:
    if adapter.manages_replication:
        pytest.skip("S3 copies replicas itself")
    store = adapter.store
    key, other = _customer_key(bytes(range(32))), _customer_key(bytes(32))
    store.put_replication(versioned, ReplicationConfiguration.from_json(SEED_REPLICATION))
    small = store.put_object(versioned, "small", b"for the key holder", customer_key=key)
    # Replicated as S3 replicates SSE-C objects: PENDING like any other.
    assert small.replication_status == "PENDING"
    part1, part2 = os.urandom(5 * MIB), os.urandom(1000)
    upload = store.create_upload(versioned, "big", customer_key=key)
    done = [
        (n, store.upload_part(versioned, "big", upload, n, part, customer_key=key).etag)
        for n, part in ((1, part1), (2, part2))
    ]
    big = store.complete_upload(versioned, "big", upload, done)
    store.create_bucket("copies")
    store.set_versioning("copies", "Enabled")
    for source, content in ((small, b"for the key holder"), (big, part1 + part2)):
        seal, body = store.read_sealed(versioned, source.key, source.version_id)
        sealed = b"".join(body)
        if adapter.root is not None:
            assert content[:16] not in sealed  # the local store's is ciphertext (the fake's is clear)
        replica = replace(source, bucket="copies")
        with pytest.raises(InvalidRequest):
            store.put_replica(replica, sealed)  # an SSE-C replica needs its seal
        with pytest.raises(InvalidRequest):
            store.put_replica(replica, sealed[:-1], seal=seal)  # and all of its sealed content
        parts = store.completed_parts(versioned, source.key, version_id=source.version_id)
        written = store.put_replica(replica, sealed, parts, seal)
        assert (written.encryption, written.sse_key_md5, written.etag) == ("SSE-C", key.md5, source.etag)
        # Read with the key, as the source is; refused without it, or with another.
        assert store.get_object("copies", source.key, customer_key=key).read() == content
        with pytest.raises(InvalidRequest):
            store.head_object("copies", source.key)
        with pytest.raises(AccessDenied):
            store.get_object("copies", source.key, customer_key=other)
    assert store.get_object(
        "copies", "big", byte_range=(5 * MIB - 3, 5 * MIB + 2), customer_key=key
    ).read() == (part1[-3:] + part2[:3])
    assert store.part_range("copies", "big", 2) == (5 * MIB, 5 * MIB + 999)
    plain = store.put_object(versioned, "plain", b"x")
    with pytest.raises(InvalidRequest):
        store.read_sealed(versioned, "plain", plain.version_id)
