"""The region's SSE-S3 keyring: numbered keys, the newest encrypts, the older ones decrypt until retired.

Why a key id recorded with each stored body rather than envelope encryption (a data key per object,
wrapped by the region key): rotation is for a suspected leak, and whoever has a leaked region key and a
copy of objects.sqlite3 has every wrapped data key too. Re-wrapping the data keys would leave the bodies
readable with what the attacker already holds; only re-encrypting the bodies under a new key ends the
leak. Envelope encryption would save nothing where it matters and add an unwrap to every read, so each
body names its key by a small integer (the `sse_key` column of its row, the third member of a blob
segment, the `key_id` of a part; a body from before the keyring is key 1, the old key.sse).

Layout under the store's root: keys/sse-<id>.key, 32 random bytes each, mode 0600, written whole (a
temporary file, fsynced, hard-linked into place, the directory fsynced) so a crash leaves a key whole
or absent. keys/retire holds the id below which keys are to be retired once no body uses them (written
by a rotation with re-encryption, removed when it is done), so a restart resumes the re-encryption.
Ids only grow and the newest is never retired, so an id is never used twice.

Writes lease the newest key from the moment they encrypt until their row has committed (`writing`);
a key is retired (its file unlinked) only with no lease on it and no row naming it, checked under the
store's write lock, so no body can be committed under a key that is gone.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections import Counter
from contextlib import suppress
from pathlib import Path

from bookstore.domain.errors import StorageError
from bookstore.storage.durability import fsync_directory
from bookstore.storage.local.encryption import BlobCipher

KEYS_DIR = "keys"
LEGACY_KEY_FILE = "key.sse"
RETIRE_FILE = "retire"
# The id of the single key stores had before the keyring (key.sse); bodies that name no key use it.
LEGACY_KEY_ID = 1
_KEY_BYTES = 32


class KeyRing:
    """The SSE-S3 keys of one store's root (see the module docstring); thread-safe."""

    def __init__(self, root: Path) -> None:
        self._dir = root / KEYS_DIR
        self._lock = threading.Lock()
        self._leases: Counter[int] = Counter()
        try:
            self._dir.mkdir(mode=0o700, exist_ok=True)
            for temp in self._dir.glob(".*"):
                temp.unlink()  # a key or mark a crash left half-made: never linked, never used
            self._migrate(root)
            self._ciphers = {kid: BlobCipher(self._read(kid)) for kid in self._ids_on_disk()}
            if not self._ciphers:
                self._ciphers[LEGACY_KEY_ID] = BlobCipher(self._write_new(LEGACY_KEY_ID))
            self._retiring = self._read_retire()
        except OSError as exc:
            raise StorageError(f"object store: cannot open its keys in {self._dir}: {exc}") from exc

    @property
    def newest(self) -> int:
        """The id of the key new bodies are encrypted with."""
        with self._lock:
            return max(self._ciphers)

    def ids(self) -> list[int]:
        with self._lock:
            return sorted(self._ciphers)

    def cipher(self, key_id: int) -> BlobCipher:
        """The cipher of key `key_id`; StorageError when the keyring does not hold it (retired or lost)."""
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise StorageError(
                f"object store: a body is encrypted with SSE-S3 key {key_id}, which is not in {self._dir}"
            )
        return cipher

    def writing(self) -> Lease:
        """The newest key, leased until the block ends: hold it from encrypting until the row commits."""
        return Lease(self)

    def rotate(self, *, reencrypt: bool) -> int:
        """Make a new key, newest from now on; with `reencrypt`, mark every older key to be retired."""
        with self._lock:
            key_id = max(self._ciphers) + 1
            try:
                self._ciphers[key_id] = BlobCipher(self._write_new(key_id))
                if reencrypt:
                    self._write_retire(key_id)
                    self._retiring = key_id
            except OSError as exc:
                raise StorageError(f"object store: cannot write a new key in {self._dir}: {exc}") from exc
            return key_id

    def retiring_below(self) -> int | None:
        """The id below which keys wait to be retired (a rotation with re-encryption), else None."""
        return self._retiring

    def leased_below(self, bound: int) -> bool:
        """Whether a write holds a key older than `bound` (it may commit a body under it yet)."""
        with self._lock:
            return any(n for kid, n in self._leases.items() if kid < bound)

    def retire_below(self, bound: int) -> list[int]:
        """Unlink every key older than `bound` and the retire mark; the ids retired.

        The caller has checked, under the store's write lock it still holds, that no row names such a
        key and `leased_below(bound)` is False: no body can need them any more.
        """
        with self._lock:
            doomed = [kid for kid in self._ciphers if kid < bound]
            for kid in doomed:
                (self._dir / _name(kid)).unlink(missing_ok=True)
                del self._ciphers[kid]
            (self._dir / RETIRE_FILE).unlink(missing_ok=True)
            fsync_directory(self._dir)
            self._retiring = None
            return sorted(doomed)

    # Files.

    def _ids_on_disk(self) -> list[int]:
        ids = []
        for path in self._dir.iterdir():
            stem = path.name.removeprefix("sse-").removesuffix(".key")
            if path.name.startswith("sse-") and path.name.endswith(".key") and stem.isdigit():
                ids.append(int(stem))
        return sorted(ids)

    def _read(self, key_id: int) -> bytes:
        path = self._dir / _name(key_id)
        key = path.read_bytes()
        if len(key) != _KEY_BYTES:
            raise StorageError(f"object store: {path} is not a {_KEY_BYTES}-byte key")
        return key

    def _read_retire(self) -> int | None:
        path = self._dir / RETIRE_FILE
        try:
            return int(path.read_text().strip())
        except FileNotFoundError:
            return None
        except ValueError as exc:
            raise StorageError(f"object store: {path} does not hold a key id: {exc}") from exc

    def _write_new(self, key_id: int) -> bytes:
        key = secrets.token_bytes(_KEY_BYTES)
        _write_whole(self._dir, _name(key_id), key)
        return key

    def _write_retire(self, bound: int) -> None:
        # Replaced in one rename: a crash leaves the old mark or the new one, never none.
        temp = self._dir / f".{RETIRE_FILE}.{secrets.token_hex(8)}"
        fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        try:
            os.write(fd, str(bound).encode())
            os.fsync(fd)
        finally:
            os.close(fd)
        os.replace(temp, self._dir / RETIRE_FILE)
        fsync_directory(self._dir)

    def _migrate(self, root: Path) -> None:
        """A store from before the keyring: its key.sse becomes key 1 (linked, then the old name goes)."""
        legacy = root / LEGACY_KEY_FILE
        if not legacy.exists():
            return
        key = legacy.read_bytes()
        if len(key) != _KEY_BYTES:
            raise StorageError(f"object store: {legacy} is not a {_KEY_BYTES}-byte key")
        target = self._dir / _name(LEGACY_KEY_ID)
        if not target.exists():
            os.link(legacy, target)
            fsync_directory(self._dir)
        elif target.read_bytes() != key:
            # Not a migration cut short by a crash: the bodies may need either key, so lose neither.
            raise StorageError(f"object store: {legacy} and {target} hold different keys; keep both aside")
        legacy.unlink()
        fsync_directory(root)


class Lease:
    """`with` a Lease: (id, cipher) of the newest key, which cannot be retired until the block ends.

    A class rather than a generator context manager: every small PUT takes one.
    """

    __slots__ = ("_key_id", "_ring")

    def __init__(self, ring: KeyRing) -> None:
        self._ring = ring
        self._key_id = 0

    def __enter__(self) -> tuple[int, BlobCipher]:
        ring = self._ring
        with ring._lock:
            self._key_id = key_id = max(ring._ciphers)
            ring._leases[key_id] += 1
            return key_id, ring._ciphers[key_id]

    def __exit__(self, *_: object) -> None:
        ring = self._ring
        with ring._lock:
            ring._leases[self._key_id] -= 1


def _name(key_id: int) -> str:
    return f"sse-{key_id:06d}.key"


def _write_whole(directory: Path, name: str, data: bytes) -> None:
    """`data` in directory/name, mode 0600, whole or not at all; FileExistsError if the name is taken."""
    temp = directory / f".{name}.{secrets.token_hex(8)}"
    fd = os.open(temp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        os.write(fd, data)
        os.fsync(fd)
    finally:
        os.close(fd)
    try:
        os.link(temp, directory / name)
        fsync_directory(directory)
    finally:
        with suppress(OSError):
            temp.unlink()
