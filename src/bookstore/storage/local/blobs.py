"""The blob files of the local object store: content taken in, written durably, read by range, swept.

With a cipher (storage.local.encryption), what is written is encrypted (the IV first) and what is read
decrypted; `Content` keeps the size and MD5 of the plaintext, and an inline body its ciphertext.

Under `root`: blobs/xx/<random id> holds one body or multipart part each, never shared; a write goes to
tmp/, is fsynced and renamed into blobs/ (and under durability "power" the directory is fsynced too)
before the metadata transaction that refers to it commits. A crash in between leaves an unreferenced
file that `sweep` removes at the next start, never a visible half-written object.
"""

from __future__ import annotations

import hashlib
import mmap
import os
import secrets
import shutil
from collections.abc import Collection, Iterable, Iterator, Sequence
from contextlib import suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookstore.domain.errors import StorageError
from bookstore.objectstore.port import Body
from bookstore.storage.durability import Durability, fsync_directory
from bookstore.storage.local.encryption import IV_BYTES, BlobCipher

# Bodies up to this many bytes live in the metadata row (a small PUT is one SQLite transaction).
INLINE_MAX = 64 * 1024
_CHUNK = 1024 * 1024
# The most of an encrypted blob file a reader maps at once (see _decrypted).
_WINDOW = 8 * _CHUNK


@dataclass
class Content:
    """A body taken in: in memory (`inline`) or in one blob file, with its size and MD5."""

    size: int
    md5: str
    inline: bytes | None = None
    blob_id: str | None = None
    # The SSE-S3 key that encrypts it (storage.local.keyring); None under a customer's key.
    key_id: int | None = None


class BlobFiles:
    """The files under blobs/ and tmp/ of an object store's root."""

    def __init__(self, root: Path, durability: Durability) -> None:
        self.durability = durability
        self._blobs = root / "blobs"
        self._tmp = root / "tmp"
        self._tmp.mkdir(parents=True, exist_ok=True)
        for n in range(256):
            (self._blobs / f"{n:02x}").mkdir(parents=True, exist_ok=True)

    def path(self, blob_id: str) -> Path:
        return self._blobs / blob_id[:2] / blob_id

    def take(self, body: Body, *, inline: bool = True, cipher: BlobCipher | None = None) -> Content:
        """Take a body in: small ones stay in memory, the rest goes to a durable blob file."""
        if isinstance(body, bytes | bytearray | memoryview):
            data = bytes(body)
            if inline and len(data) <= INLINE_MAX:
                md5 = hashlib.md5(data, usedforsecurity=False).hexdigest()
                return Content(len(data), md5, inline=_sealed(data, cipher))
            return self.write((data,), cipher)
        digest = hashlib.md5(usedforsecurity=False)
        head: list[bytes] = []
        size = 0
        chunks = iter(body)
        if inline:
            for chunk in chunks:
                head.append(chunk)
                size += len(chunk)
                if size > INLINE_MAX:
                    break
            else:
                data = b"".join(head)
                digest.update(data)
                return Content(len(data), digest.hexdigest(), inline=_sealed(data, cipher))
        return self.write(_chain(head, chunks), cipher)

    def write(self, chunks: Iterable[bytes], cipher: BlobCipher | None = None) -> Content:
        """Write a new blob file durably (see the module docstring) and return its content."""
        blob_id = secrets.token_hex(16)
        temp = self._tmp / blob_id
        digest = hashlib.md5(usedforsecurity=False)
        size = 0

        def plain() -> Iterator[bytes]:
            nonlocal size
            for chunk in chunks:
                digest.update(chunk)
                size += len(chunk)
                yield chunk

        try:
            with open(temp, "wb") as f:
                for chunk in plain() if cipher is None else cipher.encrypt(plain()):
                    f.write(chunk)
                f.flush()
                os.fsync(f.fileno())
            target = self.path(blob_id)
            os.replace(temp, target)
            if self.durability == "power":
                # The rename is durable only once its directory is: else a power loss could lose the
                # file of a committed row.
                fsync_directory(target.parent)
        except OSError as exc:
            temp.unlink(missing_ok=True)
            raise StorageError(f"object store: cannot write content: {exc}") from exc
        except BaseException:
            temp.unlink(missing_ok=True)
            raise
        return Content(size, digest.hexdigest(), blob_id=blob_id)

    def discard(self, content: Content | None) -> None:
        """Remove the blob file of content taken in but not committed."""
        if content is not None and content.blob_id is not None:
            self.unlink([content.blob_id])
            content.blob_id = None

    def unlink(self, blob_ids: Iterable[str]) -> None:
        for blob_id in blob_ids:
            # A file that cannot go now is left for the sweep at the next start: orphans are harmless.
            with suppress(OSError):
                self.path(blob_id).unlink(missing_ok=True)

    def sweep(self, referenced: Collection[str]) -> None:
        """Remove temp files and blob files no committed row refers to (left by a crash)."""
        shutil.rmtree(self._tmp, ignore_errors=True)
        self._tmp.mkdir(exist_ok=True)
        for folder in self._blobs.iterdir():
            for path in folder.iterdir():
                if path.name not in referenced:
                    path.unlink(missing_ok=True)

    def reader(
        self,
        segments: Sequence[tuple[str, int]],
        first: int,
        last: int,
        ciphers: Sequence[BlobCipher | None] = (),
    ) -> Iterator[bytes]:
        """Bytes first..last of the segments, each decrypted with its cipher (`ciphers`, one a segment;
        none: read as stored); the first file opens now, so a later delete cannot race it."""
        plan: list[tuple[str, int, int, BlobCipher | None]] = []
        offset = 0
        for index, (blob_id, size) in enumerate(segments):
            start, end = max(first, offset), min(last, offset + size - 1)
            if start <= end:
                plan.append((blob_id, start - offset, end - start + 1, ciphers[index] if ciphers else None))
            offset += size
        if not plan:
            return iter(())
        try:
            opened = open(self.path(plan[0][0]), "rb")  # noqa: SIM115 - closed by the generator
        except OSError as exc:
            raise StorageError(f"object store: content missing: {exc}") from exc
        return self._stream(opened, plan)

    def _stream(self, opened: Any, plan: list[tuple[str, int, int, BlobCipher | None]]) -> Iterator[bytes]:
        f = opened
        try:
            for i, (blob_id, start, length, cipher) in enumerate(plan):
                if i > 0:
                    f.close()
                    f = open(self.path(blob_id), "rb")  # noqa: SIM115 - closed below
                if cipher is not None:
                    yield from _decrypted(f, cipher, start, length, blob_id)
                    continue
                f.seek(start)
                while length > 0:
                    chunk = f.read(min(_CHUNK, length))
                    if not chunk:
                        raise StorageError(f"object store: content {blob_id} is shorter than recorded")
                    length -= len(chunk)
                    yield chunk
        except OSError as exc:
            raise StorageError(f"object store: cannot read content: {exc}") from exc
        finally:
            f.close()


def _decrypted(f: Any, cipher: BlobCipher, start: int, length: int, blob_id: str) -> Iterator[bytes]:
    """Content bytes start..start+length of an encrypted blob file, a MiB at a time.

    The cipher reads the ciphertext straight from the page cache through a window of the file mapped
    in memory, then unmapped: reading it into a buffer first was one more pass over every byte (about
    a tenth of an 8 MiB GET's CPU). A window spans up to _WINDOW bytes, not one MiB: each mapping costs
    five syscalls (Python's mmap duplicates the descriptor and checks its size) and its own page
    faults, about 0.3 ms of an 8 MiB GET's 7; the cap bounds what a long answer keeps mapped. Blob
    files are never changed once written, and a file unlinked while mapped stays readable, so a
    window cannot shrink under the reader.
    """
    decrypt = cipher.decryptor(f.read(IV_BYTES), start).update
    offset = IV_BYTES + start
    if os.fstat(f.fileno()).st_size < offset + length:
        raise StorageError(f"object store: content {blob_id} is shorter than recorded")
    while length > 0:
        span = min(_WINDOW, length)
        # A mapping starts at a multiple of the allocation granularity (a page).
        base = offset - offset % mmap.ALLOCATIONGRANULARITY
        window = mmap.mmap(f.fileno(), offset - base + span, offset=base, access=mmap.ACCESS_READ)
        try:
            with memoryview(window) as view:
                for at in range(offset - base, offset - base + span, _CHUNK):
                    yield decrypt(view[at : min(at + _CHUNK, offset - base + span)])
        finally:
            window.close()
        offset += span
        length -= span


def _sealed(data: bytes, cipher: BlobCipher | None) -> bytes:
    return data if cipher is None else cipher.encrypt_bytes(data)


def _chain(head: list[bytes], rest: Iterator[bytes]) -> Iterator[bytes]:
    yield from head
    yield from rest
