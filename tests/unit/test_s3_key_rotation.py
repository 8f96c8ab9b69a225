"""SSE-S3 key rotation in the local store: a keyring, re-encryption of every kind of body, older stores."""

from __future__ import annotations

import base64
import hashlib
import os
import shutil
import sqlite3
import stat
from pathlib import Path
from typing import Any

import orjson
import pytest

from bookstore.kernel.clock import SystemClock
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.sse_keys import KeyRotation
from bookstore.storage.local.objects import LocalObjectStore

MIB = 1024 * 1024
BUCKET = "books"
MARKER = b"PLAIN-TEXT-MARKER-"
CUSTOMER = CustomerKey(b"c" * 32, base64.b64encode(hashlib.md5(b"c" * 32).digest()).decode())


def open_store(root: Path) -> LocalObjectStore:
    return LocalObjectStore(root, "eu-west-1", SystemClock(), min_part_size=MIB)


def body(n: int, tag: bytes = b"") -> bytes:
    """`n` bytes that hold the marker (so that a body on disk in clear would be found) and differ by tag."""
    unit = MARKER + tag + b"."
    return (unit * (n // len(unit) + 1))[:n]


def finish(keys: KeyRotation, steps: int = 10_000) -> int:
    """Run re-encryption to its end; the bodies it rewrote."""
    rewritten = 0
    for _ in range(steps):
        progress = keys.reencrypt_step(4)
        rewritten += progress.rewritten
        if progress.done:
            return rewritten
    raise AssertionError("re-encryption did not finish")


def key_files(root: Path) -> list[str]:
    return sorted(p.name for p in (root / "keys").iterdir())


def assert_nothing_in_clear(root: Path) -> None:
    for path in root.rglob("*"):
        if path.is_file():
            assert MARKER not in path.read_bytes(), path


class Objects:
    """One of every kind of body, written into a store, and what each must read back as."""

    def __init__(self, store: LocalObjectStore) -> None:
        self.store = store
        store.create_bucket(BUCKET)
        store.set_versioning(BUCKET, "Enabled")
        self.expected: dict[str, bytes] = {}
        self.small = self.put("small", body(1000, b"s"))  # inline, in its SQLite row
        self.big = self.put("big", body(300_000, b"b"))  # one blob file
        self.put("old-version", body(200, b"o1"))
        self.old_version = store.list_versions(BUCKET, prefix="old-version").versions[0].version_id
        self.put("old-version", body(200, b"o2"))
        self.expected["old-version@1"] = body(200, b"o1")
        secret = body(100_000, b"c")
        store.put_object(BUCKET, "sse-c", secret, customer_key=CUSTOMER)
        self.secret = secret
        self.upload = store.create_upload(BUCKET, "multipart")
        self.parts = [body(MIB, b"p1"), body(MIB, b"p2"), body(1000, b"p3")]

    def put(self, key: str, data: bytes) -> str:
        self.expected[key] = data
        return self.store.put_object(BUCKET, key, data).version_id

    def upload_part(self, number: int) -> tuple[int, str]:
        part = self.store.upload_part(BUCKET, "multipart", self.upload, number, self.parts[number - 1])
        return number, part.etag

    def complete(self, etags: list[tuple[int, str]]) -> None:
        self.store.complete_upload(BUCKET, "multipart", self.upload, etags)
        self.expected["multipart"] = b"".join(self.parts)

    def check(self, store: LocalObjectStore | None = None) -> None:
        store = store or self.store
        for key, data in self.expected.items():
            if key == "old-version@1":
                got = store.get_object(BUCKET, "old-version", version_id=self.old_version).read()
            else:
                got = store.get_object(BUCKET, key).read()
                # A range across every piece boundary reads as the same bytes of the whole.
                if len(data) > 10:
                    first, last = len(data) // 3, len(data) - 7
                    ranged = store.get_object(BUCKET, key, byte_range=(first, last)).read()
                    assert ranged == data[first : last + 1], key
            assert got == data, key
        assert store.get_object(BUCKET, "sse-c", customer_key=CUSTOMER).read() == self.secret
        if "multipart" in self.expected:
            # Across the boundary of parts written under two keys.
            cut = (MIB - 5, MIB + 5)
            assert (
                store.get_object(BUCKET, "multipart", byte_range=cut).read()
                == self.expected["multipart"][MIB - 5 : MIB + 6]
            )


def test_new_writes_use_the_newest_key_and_older_bodies_stay_readable(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    objects = Objects(store)
    first = objects.upload_part(1)
    status = store.rotate_key(reencrypt=False)
    assert (status.keys, status.newest, status.retiring_below) == ((1, 2), 2, None)
    objects.put("after", body(5000, b"a"))
    objects.complete([first, objects.upload_part(2), objects.upload_part(3)])
    objects.check()
    db = sqlite3.connect(tmp_path / "objects.sqlite3")
    keyed = dict(db.execute("SELECT key, sse_key FROM versions WHERE latest = 1"))
    assert keyed["small"] == keyed["big"] == 1 and keyed["after"] == 2 and keyed["sse-c"] is None
    # The multipart object's segments name their keys: its first part under key 1, the others under 2.
    (blobs,) = db.execute("SELECT blobs FROM versions WHERE key = 'multipart'").fetchone()
    assert [segment[2] for segment in orjson.loads(blobs)] == [1, 2, 2] and keyed["multipart"] == 1
    # A version counts under the oldest key of its pieces: "after" alone is all under key 2.
    assert store.key_status().bodies[2] == 1
    assert key_files(tmp_path) == ["sse-000001.key", "sse-000002.key"]
    assert_nothing_in_clear(tmp_path)
    store.close()


def test_reencryption_rewrites_every_body_then_retires_the_old_key(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    objects = Objects(store)
    first = objects.upload_part(1)  # a part of an upload still in progress
    objects.complete  # noqa: B018 - completed after the rotation
    old_files = {p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()}
    status = store.rotate_key(reencrypt=True)
    assert status.retiring_below == 2 and status.bodies[1] >= 5
    assert finish(store) >= 5
    status = store.key_status()
    assert (status.keys, status.retiring_below) == ((2,), None)
    # Every SSE-S3 body is now under key 2 (the SSE-C one is the customer's, counted under no key).
    assert set(status.bodies) == {2}
    assert key_files(tmp_path) == ["sse-000002.key"]
    # The blob files under the old key are gone; the SSE-C one was never rewritten.
    now = {p.name for p in (tmp_path / "blobs").rglob("*") if p.is_file()}
    assert len(old_files - now) == len(old_files) - 1
    objects.complete([first, objects.upload_part(2), objects.upload_part(3)])
    objects.check()
    store.close()
    reopened = open_store(tmp_path)
    objects.check(reopened)
    assert_nothing_in_clear(tmp_path)
    reopened.close()


def test_a_key_leased_by_a_write_in_flight_is_not_retired_until_it_commits(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.create_bucket(BUCKET)
    store.put_object(BUCKET, "k", b"x" * 100)
    keys: Any = store._keys
    with keys.writing() as (key_id, _):
        assert key_id == 1
        store.rotate_key(reencrypt=True)
        for _ in range(5):
            assert not store.reencrypt_step(4).done
        assert key_files(tmp_path) == ["retire", "sse-000001.key", "sse-000002.key"]
    assert store.reencrypt_step(4).done
    assert key_files(tmp_path) == ["sse-000002.key"]
    assert store.get_object(BUCKET, "k").read() == b"x" * 100
    store.close()


def test_a_rotation_with_reencryption_resumes_after_a_restart(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    objects = Objects(store)
    for n in range(20):
        objects.put(f"many/{n}", body(100 + n * 3000, str(n).encode()))
    store.rotate_key(reencrypt=True)
    assert store.reencrypt_step(4).rewritten == 4
    store.close()
    reopened = open_store(tmp_path)
    assert reopened.key_status().retiring_below == 2
    objects.check(reopened)
    finish(reopened)
    assert key_files(tmp_path) == ["sse-000002.key"]
    objects.check(reopened)
    reopened.close()


def test_keys_are_mode_0600_in_a_private_directory_and_a_rotation_writes_nothing_else(tmp_path: Path) -> None:
    store = open_store(tmp_path)
    store.rotate_key(reencrypt=False)
    assert stat.S_IMODE((tmp_path / "keys").stat().st_mode) == 0o700
    for name in key_files(tmp_path):
        path = tmp_path / "keys" / name
        assert stat.S_IMODE(path.stat().st_mode) == 0o600 and len(path.read_bytes()) == 32
    assert len({(tmp_path / "keys" / n).read_bytes() for n in key_files(tmp_path)}) == 2
    store.close()


def make_old_store(root: Path) -> Objects:
    """A store as the code before the keyring left it: key.sse, no key columns, segments of two members,
    plus a version and an upload's part from before encryption at rest (in clear)."""
    store = open_store(root)
    objects = Objects(store)
    first = objects.upload_part(1)
    objects.complete([first, objects.upload_part(2), objects.upload_part(3)])
    objects.upload = store.create_upload(BUCKET, "pending")
    store.upload_part(BUCKET, "pending", objects.upload, 1, objects.parts[0])
    store.close()
    db = sqlite3.connect(root / "objects.sqlite3")
    for row_id, blobs in db.execute("SELECT id, blobs FROM versions WHERE blobs IS NOT NULL").fetchall():
        db.execute(
            "UPDATE versions SET blobs = ? WHERE id = ?",
            (orjson.dumps([segment[:2] for segment in orjson.loads(blobs)]), row_id),
        )
    clear = body(3000, b"clear")
    db.execute(
        "INSERT INTO versions (bucket, key, sort_id, version_id, latest, marker, last_modified_ms, size, "
        "etag, content_type, meta, inline) "
        "VALUES ('books', 'clear', '0', 'null', 1, 0, 1, ?, 'x', 'text/plain', ?, ?)",
        (len(clear), orjson.dumps({"m": {}, "h": {}, "t": {}}), clear),
    )
    db.execute("ALTER TABLE versions DROP COLUMN sse_key")
    db.execute("ALTER TABLE parts DROP COLUMN key_id")
    db.commit()
    db.close()
    shutil.move(root / "keys" / "sse-000001.key", root / "key.sse")
    (root / "keys").rmdir()
    objects.expected["clear"] = clear
    return objects


def test_a_store_with_a_single_key_sse_is_migrated_on_open_and_can_retire_it(tmp_path: Path) -> None:
    objects = make_old_store(tmp_path)
    legacy = (tmp_path / "key.sse").read_bytes()
    store = open_store(tmp_path)
    assert not (tmp_path / "key.sse").exists()
    assert (tmp_path / "keys" / "sse-000001.key").read_bytes() == legacy
    status = store.key_status()
    assert status.keys == (1,) and status.bodies[0] == 1  # the version stored in clear
    objects.check(store)
    assert store.get_object(BUCKET, "clear").version.encryption == ""
    # The pending upload's part (from before) and one written now complete into one readable object.
    pending = objects.upload
    part2 = store.upload_part(BUCKET, "pending", pending, 2, body(10, b"new"))
    store.rotate_key(reencrypt=True)
    finish(store)
    assert key_files(tmp_path) == ["sse-000002.key"]
    first = next(p for p in store.list_parts(BUCKET, "pending", pending) if p.number == 1)
    store.complete_upload(BUCKET, "pending", pending, [(1, first.etag), (2, part2.etag)])
    assert store.get_object(BUCKET, "pending").read() == objects.parts[0] + body(10, b"new")
    objects.check(store)
    # The version once stored in clear is encrypted now, and says so.
    assert store.get_object(BUCKET, "clear").version.encryption == "AES256"
    assert_nothing_in_clear(tmp_path)
    store.close()


def test_a_key_sse_beside_a_different_key_1_is_refused_rather_than_lost(tmp_path: Path) -> None:
    open_store(tmp_path).close()
    (tmp_path / "key.sse").write_bytes(os.urandom(32))
    with pytest.raises(Exception, match="hold different keys"):
        open_store(tmp_path)


def test_replicas_between_stores_with_rotated_keys_read_back_and_reencrypt(tmp_path: Path) -> None:
    source, dest = open_store(tmp_path / "source"), open_store(tmp_path / "dest")
    objects = Objects(source)
    first = objects.upload_part(1)
    source.rotate_key(reencrypt=False)
    objects.complete([first, objects.upload_part(2), objects.upload_part(3)])
    dest.create_bucket(BUCKET)
    dest.set_versioning(BUCKET, "Enabled")
    dest.rotate_key(reencrypt=False)
    # As the replicator sends them: clear content read through the source's keys (one piece, with the
    # parts), an SSE-C version's sealed pieces as stored; the destination writes under its newest key.
    for version in source.list_versions(BUCKET).versions:
        if version.encryption == "SSE-C":
            seal, pieces = source.read_sealed(BUCKET, version.key, version.version_id)
            dest.put_replica(version, b"".join(pieces), (), seal)
        else:
            data = source.get_object(BUCKET, version.key, version_id=version.version_id).read()
            parts = source.completed_parts(BUCKET, version.key, version_id=version.version_id)
            dest.put_replica(version, data, parts)
    assert set(dest.key_status().bodies) == {2}
    dest.rotate_key(reencrypt=True)
    finish(dest)
    assert dest.key_status().keys == (3,)
    objects.check(dest)
    assert dest.get_object(BUCKET, "multipart", **part_number_range(dest)).read() == objects.parts[1]
    source.close()
    dest.close()


def part_number_range(store: LocalObjectStore) -> Any:
    """The byte range of part 2 of the multipart object, as GET ?partNumber=2 reads it."""
    found = store.part_range(BUCKET, "multipart", 2)
    assert found is not None
    return {"byte_range": found}


def test_encrypted_reads_interleaved_each_read_their_own_bytes(tmp_path: Path) -> None:
    # Each stream holds its own reused read buffer until it ends: interleaved, none sees another's bytes.
    store = open_store(tmp_path)
    store.create_bucket(BUCKET)
    bodies = {f"k{n}": os.urandom(3 * MIB + n) for n in range(3)}
    for key, data in bodies.items():
        store.put_object(BUCKET, key, data)
    for _ in range(2):
        streams = {key: iter(store.get_object(BUCKET, key).body) for key in bodies}
        got: dict[str, list[bytes]] = {key: [] for key in bodies}
        while streams:
            for key in list(streams):
                piece = next(streams[key], None)
                if piece is None:
                    del streams[key]
                else:
                    got[key].append(piece)
        assert {key: b"".join(pieces) for key, pieces in got.items()} == bodies
    store.close()
