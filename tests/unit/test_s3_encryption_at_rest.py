"""The local store's encryption at rest and checksums below the HTTP layer: ciphers, keys, older stores."""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path

import orjson
import pytest

from bookstore.domain.errors import StorageError
from bookstore.kernel.clock import SystemClock
from bookstore.objectstore import checksums
from bookstore.storage.local import blobs
from bookstore.storage.local.encryption import IV_BYTES, BlobCipher
from bookstore.storage.local.keyring import KeyRing
from bookstore.storage.local.objects import LocalObjectStore


@pytest.mark.parametrize("offset", [0, 1, 15, 16, 17, 4095, 65_537, 999_999])
def test_ctr_decrypts_from_any_offset(offset: int) -> None:
    cipher = BlobCipher(os.urandom(32))
    plain = os.urandom(1_000_000)
    stored = b"".join(cipher.encrypt([plain[:300_001], plain[300_001:]]))
    assert len(stored) == IV_BYTES + len(plain) and plain[:1000] not in stored
    iv, body = stored[:IV_BYTES], stored[IV_BYTES:]
    assert cipher.decryptor(iv, offset).update(body[offset:]) == plain[offset:]


def test_whole_bodies_and_streams_share_the_key_stream_and_do_not_disturb_each_other() -> None:
    cipher = BlobCipher(os.urandom(32))
    first, second = os.urandom(5000), os.urandom(70_000)
    # A stream left open while whole bodies are sealed and opened in the same thread (the thread's
    # context for whole bodies is reset for each) still encrypts as one key stream.
    stream = cipher.encrypt(iter([first[:1000], first[1000:]]))
    pieces = [next(stream), next(stream)]
    sealed = cipher.encrypt_bytes(second)
    assert cipher.decrypt_bytes(sealed) == second
    pieces += list(stream)
    stored = b"".join(pieces)
    assert cipher.decrypt_bytes(stored) == first
    assert cipher.decryptor(stored[:IV_BYTES], 0).update(stored[IV_BYTES:]) == first
    # Each whole body has its own IV: the same content twice is stored differently.
    assert cipher.encrypt_bytes(second) != sealed
    assert cipher.decryptor(sealed[:IV_BYTES], 0).update(sealed[IV_BYTES:]) == second


def test_a_blob_file_shorter_than_its_row_says_is_a_storage_error(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "store", "eu-west-1", SystemClock())
    store.create_bucket("short")
    data = os.urandom(3 * 1024 * 1024)
    store.put_object("short", "k", iter([data]))
    (blob,) = [p for p in (tmp_path / "store" / "blobs").rglob("*") if p.is_file()]
    with blob.open("r+b") as f:
        f.truncate(IV_BYTES + 2 * 1024 * 1024)
    # Read through a memory map, a missing end must be refused before it is mapped (SIGBUS otherwise).
    with pytest.raises(StorageError, match="shorter than recorded"):
        b"".join(store.get_object("short", "k").body)
    assert b"".join(store.get_object("short", "k", byte_range=(0, 99)).body) == data[:100]
    store.close()


@pytest.mark.parametrize(
    ("first", "last"), [(0, None), (1, 3 * 1024 * 1024 + 7), (2 * 1024 * 1024 - 3, 2 * 1024 * 1024 + 2)]
)
def test_reads_across_mapped_windows_decrypt_every_byte(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, first: int, last: int | None
) -> None:
    # Windows of 2 MiB, not 8, so that a few MiB cross several, starting and ending inside one.
    monkeypatch.setattr(blobs, "_WINDOW", 2 * 1024 * 1024)
    store = LocalObjectStore(tmp_path / "store", "eu-west-1", SystemClock())
    store.create_bucket("wide")
    data = os.urandom(5 * 1024 * 1024 + 123)
    store.put_object("wide", "k", iter([data]))
    end = len(data) - 1 if last is None else last
    got = store.get_object("wide", "k", byte_range=None if last is None else (first, last))
    pieces = list(got.body)
    assert b"".join(pieces) == data[first : end + 1]
    assert max(len(p) for p in pieces) <= 1024 * 1024


def test_the_key_is_made_once_with_mode_0600(tmp_path: Path) -> None:
    first = KeyRing(tmp_path)
    again = KeyRing(tmp_path)
    assert first.ids() == again.ids() == [1]
    assert first.cipher(1).encrypt_bytes(b"x")[IV_BYTES:] != b"x"
    key = tmp_path / "keys" / "sse-000001.key"
    assert key.stat().st_mode & 0o777 == 0o600 and len(key.read_bytes()) == 32
    assert sorted(p.name for p in tmp_path.iterdir()) == ["keys"]
    assert sorted(p.name for p in (tmp_path / "keys").iterdir()) == ["sse-000001.key"]


def test_a_short_key_file_is_refused(tmp_path: Path) -> None:
    (tmp_path / "key.sse").write_bytes(b"short")
    with pytest.raises(Exception, match="32-byte key"):
        KeyRing(tmp_path)


def test_a_store_from_before_encryption_still_reads_and_gains_the_parts_column(tmp_path: Path) -> None:
    root = tmp_path / "store"
    store = LocalObjectStore(root, "eu-west-1", SystemClock())
    store.create_bucket("old")
    store.close()
    # What an older version left: a version stored in clear (no "e" in its meta), parts without checksum.
    db = sqlite3.connect(root / "objects.sqlite3")
    db.execute(
        "INSERT INTO versions (bucket, key, sort_id, version_id, latest, marker, last_modified_ms, size, "
        "etag, content_type, meta, inline) "
        "VALUES ('old', 'k', '0', 'null', 1, 0, 1, 5, 'x', 'text/plain', ?, ?)",
        (orjson.dumps({"m": {}, "h": {}, "t": {}}), b"hello"),
    )
    db.execute("DROP TABLE parts")
    db.execute(
        "CREATE TABLE parts (upload_id TEXT NOT NULL, number INTEGER NOT NULL, etag TEXT NOT NULL, "
        "size INTEGER NOT NULL, blob_id TEXT NOT NULL, last_modified_ms INTEGER NOT NULL, "
        "PRIMARY KEY (upload_id, number)) WITHOUT ROWID"
    )
    db.commit()
    db.close()
    store = LocalObjectStore(root, "eu-west-1", SystemClock())
    try:
        content = store.get_object("old", "k")
        assert content.read() == b"hello" and content.version.encryption == ""
        upload_id = store.create_upload("old", "m")
        part = store.upload_part("old", "m", upload_id, 1, b"part")
        assert part.checksum == ""
    finally:
        store.close()


def test_crc_combine_matches_the_crc_of_the_whole() -> None:
    a, b = os.urandom(10_000), os.urandom(3_333)
    combined = checksums.crc_combine(zlib.crc32(a), zlib.crc32(b), len(b), 0xEDB88320, 32)
    assert combined == zlib.crc32(a + b)
    names: tuple[checksums.Algorithm, ...] = ("CRC32C", "CRC64NVME")
    for name in names:
        parts = [(checksums.of(a, name), len(a)), (checksums.of(b, name), len(b))]
        assert checksums.multipart(name, "FULL_OBJECT", parts).value == checksums.of(a + b, name)
