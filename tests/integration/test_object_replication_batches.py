"""Object replication's batches between two regions' S3 ports in one process: who travels with whom."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import httpx
import pytest

from bookstore import tables
from bookstore.domain.errors import StorageError
from bookstore.kernel.auth import sign
from bookstore.kernel.clock import SystemClock
from bookstore.objectstore import checksums
from bookstore.objectstore.checksums import Checksum
from bookstore.objectstore.configs import ReplicationConfiguration
from bookstore.objectstore.errors import InvalidRequest
from bookstore.objectstore.namespace import BucketDirectory, Cluster
from bookstore.objectstore.port import ObjectVersion
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


class DestinationStore(LocalObjectStore):
    """The destination's store, failing the replicas of chosen keys once each: 503-like or refused."""

    fail_once: set[str]
    refuse_once: set[str]

    def put_replicas(self, replicas: Sequence[tuple[ObjectVersion, bytes]]) -> list[Outcome]:
        errors: dict[int, Exception] = {}
        for i, (version, _) in enumerate(replicas):
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
            self.sent.append(("batch", [v.key for v, _ in decode_batch(await request.aread())]))
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
    source = LocalObjectStore(tmp_path / "eu", EU, clock)
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
        {"AKIABATCHES": "unused"},
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
    genuine = encode_batch([(ObjectVersion(**{**vars(source), "bucket": DEST}), b"real")])
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
