"""KeyFiles: the SigningKeyStore port as PEM files (PKCS#8, mode 0600) in a directory of the region's own."""

from __future__ import annotations

import logging
import os
import re
import tempfile
from pathlib import Path

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bookstore.domain.errors import StorageError, ValidationError

log = logging.getLogger(__name__)

# A kid names a file: nothing that could leave the directory or hide the file.
_KID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_.-]{0,127}")


class KeyFiles:
    """Private signing keys as `<kid>.pem` in `key_dir` (made mode 0700 when absent); `region` labels logs."""

    def __init__(self, key_dir: Path, *, region: str = "") -> None:
        self.key_dir = Path(key_dir)
        self._region = region

    def path(self, kid: str) -> Path:
        """The file that holds the key of `kid`."""
        if not _KID_RE.fullmatch(kid):
            raise ValidationError(f"a key id names a file: letters, digits, '.', '_' or '-', got {kid!r}")
        return self.key_dir / f"{kid}.pem"

    def load_or_create(self, kid: str) -> Ed25519PrivateKey:
        path = self.path(kid)
        try:
            self.key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                pem = Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                if _write_new_key(path, pem):
                    log.info("region=%s event=signing_key_created path=%s", self._region, path)
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read or create the signing key {path}: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise StorageError(f"{path} does not hold a readable private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise StorageError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return key


def _write_new_key(path: Path, pem: bytes) -> bool:
    """Writes `pem` to `path` atomically, mode 0600; False when another process created it first."""
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as f:
            f.write(pem)
            f.flush()
            os.fsync(f.fileno())
        try:
            # A hard link never replaces an existing file, so of two processes racing on a first start
            # both end up using the first key written.
            os.link(tmp, path)
        except FileExistsError:
            return False
        except OSError:
            if path.exists():
                return False
            os.replace(tmp, path)
        dir_fd = os.open(path.parent, os.O_RDONLY)
        try:
            os.fsync(dir_fd)
        finally:
            os.close(dir_fd)
        return True
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
