"""The deployment's shared secret, which signs every request between regions."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

ENV = "BOOKSTORE_SECRET"
FILE = "secret"


def deployment_secret(data_dir: Path) -> str:
    """BOOKSTORE_SECRET when set; else the one kept in DATA_DIR/secret, created (mode 0600) on first use."""
    from_env = os.environ.get(ENV)
    if from_env:
        return from_env
    path = data_dir / FILE
    try:
        return path.read_text(encoding="ascii").strip()
    except FileNotFoundError:
        pass
    data_dir.mkdir(parents=True, exist_ok=True)
    value = secrets.token_urlsafe(32)
    tmp = path.with_suffix(f".{os.getpid()}.tmp")
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="ascii") as f:
        f.write(value)
        f.flush()
        os.fsync(f.fileno())
    try:
        # A link, not a rename: when two processes race, the first secret written wins for both.
        os.link(tmp, path)
    except FileExistsError:
        pass
    finally:
        tmp.unlink()
    return path.read_text(encoding="ascii").strip()
