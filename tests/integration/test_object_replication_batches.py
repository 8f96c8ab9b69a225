"""Object replication's batches between two regions' S3 ports in one process: who travels with whom."""

from __future__ import annotations

import asyncio
import base64
import hashlib
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.credentials import Credentials

from bookstore import tables
from bookstore.domain.errors import StorageError
from bookstore.kernel.auth import sign
from bookstore.kernel.clock import SystemClock
from bookstore.objectstore import checksums
from bookstore.objectstore.checksums import Algorithm, Checksum, ChecksumType
from bookstore.objectstore.configs import ReplicationConfiguration
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.errors import InvalidRequest
from bookstore.objectstore.namespace import BucketDirectory, Cluster
from bookstore.objectstore.port import ObjectVersion, Replica
from bookstore.ports import Outcome
from bookstore.replication.objects.client import PeerS3
from bookstore.replication.objects.replicator import ObjectReplicator
from bookstore.replication.objects.server import create_region_s3_app
from bookstore.replication.objects.wire import (
    BATCH_PATH,
    OBJECTS_PATH,
    VERSION_HEADER,
    decode_batch,
    decode_fields,
    encode_batch,
)
from bookstore.storage.local import LocalObjectStore
from bookstore.storage.memory.tables import MemoryTable
from tests.support.s3_replication import rule

EU, AP = "eu-west-1", "ap-southeast-1"
SECRET = "batches-between-regions"
SOURCE, DEST = "source", "copies"
# Bigger than what travels in a batch (256 KiB), and than what is read into memory (a MiB): streamed alone.
LARGE = 1024 * 1024 + 5
# The destination's S3 API credentials, for reads of its replicas through it.
ACCESS_KEY, ACCESS_SECRET = "AKIABATCHES", "unused"
# The source's minimum part size, lowered from S3's 5 MiB so that a small multipart version has several
# parts (with S3's, a small one has one: the last part has no minimum).
MIN_PART = 1024


class DestinationStore(LocalObjectStore):
    """The destination's store, failing the replicas of chosen keys once each: 503-like or refused."""

    fail_once: set[str]
    refuse_once: set[str]

    def put_replicas(self, replicas: Sequence[Replica]) -> list[Outcome]:
        errors: dict[int, Exception] = {}
        for i, replica in enumerate(replicas):
            version = replica.version
            if version.key in self.fail_once:
                self.fail_once.discard(version.key)
                errors[i] = StorageError("the disk hiccuped")
            elif version.key in self.refuse_once:
                self.refuse_once.discard(version.key)
                errors[i] = InvalidRequest("not yet")
        written = iter(super().put_replicas([r for i, r in enumerate(replicas) if i not in errors]))
        return [Outcome(error=errors[i]) if i in errors else next(written) for i in range(len(replicas))]


@dataclass
class Recorder(httpx.AsyncBaseTransport):
    """The link: passes requests to the destination's app, noting the keys each copy request carried."""

    inner: httpx.AsyncBaseTransport
    # False: answer batches as a region of an earlier release does (no such endpoint: 405).
    batches: bool = True
    # Batches lost on the way (the link drops the connection), the first ones.
    drop: int = 0
    sent: list[tuple[str, list[str]]] = field(default_factory=list)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if request.method == "POST" and request.url.path == BATCH_PATH:
            self.sent.append(("batch", [r.version.key for r in decode_batch(await request.aread())]))
            if self.drop:
                self.drop -= 1
                raise httpx.ConnectError("the link dropped it")
            if not self.batches:
                refusal = b"<Error><Code>MethodNotAllowed</Code><Message>no</Message></Error>"
                return httpx.Response(405, content=refusal)
        elif request.method == "PUT" and request.url.path == OBJECTS_PATH:
            self.sent.append(("one", [str(decode_fields(request.headers[VERSION_HEADER])["key"])]))
        return await self.inner.handle_async_request(request)

    def keys(self, kind: str) -> list[str]:
        return [key for sent, keys in self.sent if sent == kind for key in keys]


@dataclass
class Regions:
    source: LocalObjectStore
    dest: DestinationStore
    link: Recorder
    replicator: ObjectReplicator


@pytest.fixture
def regions(tmp_path: Path) -> Iterator[Regions]:
    clock = SystemClock()
    source = LocalObjectStore(tmp_path / "eu", EU, clock, min_part_size=MIN_PART)
    dest = DestinationStore(tmp_path / "ap", AP, clock)
    dest.fail_once, dest.refuse_once = set(), set()
    for store, name in ((source, SOURCE), (dest, DEST)):
        store.create_bucket(name)
        store.set_versioning(name, "Enabled")
    source.put_replication(
        SOURCE,
        ReplicationConfiguration.from_json({"Role": "r", "Rules": [rule(DEST, delete_markers="Enabled")]}),
    )
    (tmp_path / "staging").mkdir()
    app = create_region_s3_app(
        dest,
        {ACCESS_KEY: ACCESS_SECRET},
        AP,
        clock=clock,
        cluster=Cluster(AP, dest, BucketDirectory(MemoryTable(tables.BUCKETS), AP), {}, (EU, AP)),
        secret=SECRET,
        staging=tmp_path / "staging",
    )
    link = Recorder(httpx.ASGITransport(app=app))
    peer = PeerS3(AP, "http://ap.test", me=EU, secret=SECRET, clock=clock, transport=link)
    directory = BucketDirectory(MemoryTable(tables.BUCKETS), EU)
    directory.table.put({"name": DEST, "region": AP, "createdMs": 0})
    cluster = Cluster(EU, source, directory, {AP: peer}, (EU, AP))
    replicator = ObjectReplicator(cluster, source, clock, watch=[], base_backoff_s=0.01, max_backoff_s=0.1)
    yield Regions(source, dest, link, replicator)
    source.close()
    dest.close()


def replicate_all(regions: Regions, timeout_s: float = 30.0) -> None:
    """Run the source's replicator until nothing is PENDING any more."""

    async def run() -> None:
        stop = asyncio.Event()
        task = asyncio.create_task(regions.replicator.run(stop))
        deadline = time.monotonic() + timeout_s
        try:
            while regions.source.pending_replications():
                assert time.monotonic() < deadline, "versions still PENDING"
                assert not task.done(), "the replicator stopped"
                await asyncio.sleep(0.02)
        finally:
            stop.set()
            await task

    asyncio.run(run())


def assert_replicated(regions: Regions, versions: Sequence[ObjectVersion]) -> None:
    for source in versions:
        held = next(
            v
            for v in regions.source.list_versions(SOURCE, prefix=source.key).versions
            if v.version_id == source.version_id
        )
        assert held.replication_status == "COMPLETED", source.key
        listed = regions.dest.list_versions(DEST, prefix=source.key).versions
        replica = next(v for v in listed if v.version_id == source.version_id)
        assert (replica.is_delete_marker, replica.last_modified_ms, replica.replication_status) == (
            source.is_delete_marker,
            source.last_modified_ms,
            "REPLICA",
        )
        if not source.is_delete_marker:
            assert (replica.etag, replica.checksum, replica.metadata) == (
                source.etag,
                source.checksum,
                source.metadata,
            )
            original = regions.source.get_object(SOURCE, source.key, version_id=source.version_id).read()
            copy = regions.dest.get_object(DEST, source.key, version_id=source.version_id).read()
            assert copy == original


def test_small_versions_and_a_delete_marker_go_in_one_batch_a_large_one_alone(regions: Regions) -> None:
    store = regions.source
    written = [
        store.put_object(
            SOURCE,
            f"small/{i:02d}",
            f"content {i}".encode() * 10,
            metadata={"n": str(i)},
            checksum=Checksum("SHA256", checksums.of(f"content {i}".encode() * 10, "SHA256")),
        )
        for i in range(20)
    ]
    written.append(store.put_object(SOURCE, "large", b"L" * LARGE))
    store.delete_object(SOURCE, "small/00")
    marker = store.list_versions(SOURCE, prefix="small/00").versions[0]
    assert marker.is_delete_marker
    written.append(marker)

    replicate_all(regions)

    assert_replicated(regions, written)
    small = sorted([f"small/{i:02d}" for i in range(20)] + ["small/00"])
    # Started together, the small ones and the marker travelled together; the large one was streamed alone.
    assert [kind for kind, _ in regions.link.sent].count("batch") == 1
    assert sorted(regions.link.keys("batch")) == small
    assert regions.link.keys("one") == ["large"]
    assert regions.replicator.status()["destinations"][AP]["completed"] == len(written)


def test_only_the_failed_versions_of_a_batch_are_sent_again(regions: Regions) -> None:
    regions.dest.fail_once = {"k03", "k07"}
    regions.dest.refuse_once = {"k05"}
    written = [regions.source.put_object(SOURCE, f"k{i:02d}", f"v{i}".encode()) for i in range(10)]

    replicate_all(regions)

    assert_replicated(regions, written)
    sent = regions.link.keys("batch")
    assert sorted(k for k in set(sent) if sent.count(k) > 1) == ["k03", "k05", "k07"]
    assert all(sent.count(k) == 1 for k in sent if k not in ("k03", "k05", "k07"))
    assert regions.link.keys("one") == []
    # The first batch held them all; the ones sent again went without the others.
    assert sorted(regions.link.sent[0][1]) == [f"k{i:02d}" for i in range(10)]
    assert {k for _, keys in regions.link.sent[1:] for k in keys} == {"k03", "k05", "k07"}


def test_a_region_without_batches_gets_its_versions_one_by_one(regions: Regions) -> None:
    regions.link.batches = False
    written = [regions.source.put_object(SOURCE, f"old/{i}", b"x" * i) for i in range(1, 6)]

    replicate_all(regions)

    assert_replicated(regions, written)
    assert [kind for kind, _ in regions.link.sent].count("batch") == 1
    assert sorted(regions.link.keys("one")) == sorted(v.key for v in written)


def test_a_lost_batch_is_one_failed_attempt_for_the_backoff(regions: Regions) -> None:
    regions.link.drop = 1
    # Ten failures in a row would mean a backoff of 0.01 s x 2^9, over 5 s; one failure, 0.01 s.
    regions.replicator.max_backoff_s = 60.0
    written = [regions.source.put_object(SOURCE, f"lost/{i}", b"x") for i in range(10)]

    replicate_all(regions, timeout_s=4.0)

    assert_replicated(regions, written)
    assert [kind for kind, _ in regions.link.sent][:1] == ["batch"]
    assert sorted(regions.link.sent[0][1]) == sorted(v.key for v in written)


def test_a_batch_unsigned_or_altered_on_the_way_is_refused_and_writes_nothing(regions: Regions) -> None:
    source = regions.source.put_object(SOURCE, "forged", b"real")
    genuine = encode_batch([Replica(ObjectVersion(**{**vars(source), "bucket": DEST}), b"real")])
    altered = genuine.replace(b"real", b"fake")
    signed = sign(SECRET, "POST", BATCH_PATH, genuine, EU, int(time.time() * 1000), AP)

    async def post(body: bytes, headers: dict[str, str]) -> int:
        async with httpx.AsyncClient(transport=regions.link.inner, base_url="http://ap.test") as client:
            return (await client.post(BATCH_PATH, content=body, headers=headers)).status_code

    assert asyncio.run(post(genuine, {})) == 401
    assert asyncio.run(post(altered, signed)) == 403
    assert regions.dest.list_versions(DEST).versions == []
    # The same batch, signed as it is sent, is taken.
    resigned = sign(SECRET, "POST", BATCH_PATH, genuine, EU, int(time.time() * 1000), AP)
    assert asyncio.run(post(genuine, resigned)) == 200
    assert regions.dest.get_object(DEST, "forged").read() == b"real"


def s3_get(regions: Regions, target: str, headers: dict[str, str] | None = None) -> httpx.Response:
    """A signed GET of `target` (path and query) from the destination's own S3 API."""
    url = f"http://ap.test{target}"
    request = AWSRequest(method="GET", url=url, headers=headers or {})
    S3SigV4Auth(Credentials(ACCESS_KEY, ACCESS_SECRET), "s3", AP).add_auth(request)

    async def get() -> httpx.Response:
        async with httpx.AsyncClient(transport=regions.link.inner) as client:
            return await client.get(url, headers=dict(request.headers.items()))

    return asyncio.run(get())


def upload(
    store: LocalObjectStore, key: str, chunks: Sequence[bytes], customer_key: CustomerKey | None = None
) -> ObjectVersion:
    """A multipart version of `chunks`, one part each (SHA-256 checksums unless SSE-C)."""
    algorithm: tuple[Algorithm, ChecksumType] | None = None if customer_key else ("SHA256", "COMPOSITE")
    upload_id = store.create_upload(SOURCE, key, checksum=algorithm, customer_key=customer_key)
    done = []
    for number, chunk in enumerate(chunks, start=1):
        checksum = None if customer_key is not None else Checksum("SHA256", checksums.of(chunk, "SHA256"))
        part = store.upload_part(
            SOURCE, key, upload_id, number, chunk, checksum=checksum, customer_key=customer_key
        )
        done.append((number, part.etag))
    return store.complete_upload(SOURCE, key, upload_id, done)


@pytest.mark.parametrize("batches", [True, False], ids=["batched", "region-without-batches"])
def test_small_multipart_and_sse_c_versions_carry_their_parts_and_seal(
    regions: Regions, batches: bool
) -> None:
    """Small multipart and SSE-C versions go in batches like any small version (or one by one to a region
    without batches), with their parts and seal: the replica answers partNumber reads, and is read with
    the customer's key only."""
    regions.link.batches = batches
    store = regions.source
    raw = bytes(range(32))
    key = CustomerKey(raw, base64.b64encode(hashlib.md5(raw).digest()).decode())
    sse_c = {
        "x-amz-server-side-encryption-customer-algorithm": "AES256",
        "x-amz-server-side-encryption-customer-key": base64.b64encode(raw).decode(),
        "x-amz-server-side-encryption-customer-key-MD5": key.md5,
    }
    chunks = [b"first part " * 100, b"the last one"]
    secret_chunks = [b"sealed first " * 100, b"sealed last"]
    multipart = upload(store, "parts.bin", chunks)
    one_part = upload(store, "one-part.bin", [b"a one-part upload is a multipart version"])
    sealed_parts = upload(store, "secret-parts.bin", secret_chunks, key)
    secret = store.put_object(SOURCE, "secret.txt", b"for the key holder", customer_key=key)
    plain = store.put_object(SOURCE, "plain.txt", b"plain")
    written = [multipart, one_part, sealed_parts, secret, plain]
    assert all(v.replication_status == "PENDING" and v.size <= 256 * 1024 for v in written)

    replicate_all(regions)

    keys = sorted(v.key for v in written)
    if batches:
        assert sorted(regions.link.keys("batch")) == keys and regions.link.keys("one") == []
    else:
        assert sorted(regions.link.keys("one")) == keys
    assert_replicated(regions, [multipart, one_part, plain])
    for version in (sealed_parts, secret):
        held = store.head_object(SOURCE, version.key, version_id=version.version_id, customer_key=key)
        assert held.replication_status == "COMPLETED"
    # The parts' sizes and checksums are the source's; partNumber reads answer each part as at the source.
    for version in (multipart, one_part):
        source_parts = store.completed_parts(SOURCE, version.key, version_id=version.version_id)
        replica_parts = regions.dest.completed_parts(DEST, version.key, version_id=version.version_id)
        assert [(p.number, p.size, p.checksum, p.checksum_algorithm) for p in replica_parts] == [
            (p.number, p.size, p.checksum, p.checksum_algorithm) for p in source_parts
        ]
    total = sum(len(c) for c in chunks)
    for number, (first, chunk) in enumerate(((0, chunks[0]), (len(chunks[0]), chunks[1])), start=1):
        got = s3_get(regions, f"/{DEST}/parts.bin?partNumber={number}")
        assert (got.status_code, got.content, got.headers["x-amz-mp-parts-count"]) == (206, chunk, "2")
        assert got.headers["content-range"] == f"bytes {first}-{first + len(chunk) - 1}/{total}"
    assert s3_get(regions, f"/{DEST}/parts.bin?partNumber=3").status_code == 416
    # The SSE-C ones are read with the customer's key, as at the source; without it, refused.
    got = s3_get(regions, f"/{DEST}/secret.txt", sse_c)
    assert (got.status_code, got.content) == (200, b"for the key holder")
    assert got.headers["x-amz-server-side-encryption-customer-key-md5"] == key.md5
    assert s3_get(regions, f"/{DEST}/secret.txt").status_code == 400
    got = s3_get(regions, f"/{DEST}/secret-parts.bin?partNumber=2", sse_c)
    assert (got.status_code, got.content, got.headers["x-amz-mp-parts-count"]) == (206, secret_chunks[1], "2")
    whole = regions.dest.get_object(DEST, "secret-parts.bin", customer_key=key).read()
    assert whole == b"".join(secret_chunks)
    # Sealed at the destination as at the source: its blobs hold no plaintext.
    for path in (regions.dest.root).rglob("*"):
        if path.is_file():
            assert b"for the key holder" not in path.read_bytes() and b"sealed first" not in path.read_bytes()
