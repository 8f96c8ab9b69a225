"""The local store's encryption at rest and checksums below the HTTP layer: ciphers, keys, older stores."""

from __future__ import annotations

import os
import sqlite3
import zlib
from pathlib import Path

import orjson
import pytest

from bookstore.kernel.clock import SystemClock
from bookstore.objectstore import checksums
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
