"""TLS between hosts: where a host's material is, and the SSL contexts its servers and clients use."""

from __future__ import annotations

import ssl
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from bookstore.config import Topology

# Where `tls issue` leaves a host's files and where a host keeps them (the [tls] defaults' directory).
TLS_DIR = "tls"
CA_CERT, CA_KEY, HOST_CERT, HOST_KEY = "ca.crt", "ca.key", "host.crt", "host.key"


class TlsMaterialError(Exception):
    """[tls] is enabled but a file it names is not there or not usable: says which, and what to do."""


@dataclass(frozen=True)
class TlsFiles:
    """One host's material: the CA it trusts, its own certificate and key."""

    ca: Path
    cert: Path
    key: Path

    def server_context(self) -> ssl.SSLContext:
        """What a listener presents: the host's certificate; TLS 1.2 at least."""
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        context.load_cert_chain(self.cert, self.key)
        return context

    def client_context(self) -> ssl.SSLContext:
        """What a client between hosts verifies with: the deployment's CA only (not the system's), and the
        server's name or address against its certificate's SAN."""
        context = ssl.create_default_context(ssl.Purpose.SERVER_AUTH, cafile=str(self.ca))
        context.minimum_version = ssl.TLSVersion.TLSv1_2
        return context


def tls_files(topology: Topology, data_dir: Path, *, server: bool = True) -> TlsFiles | None:
    """The host's material when [tls] is enabled (relative paths under `data_dir`), else None.

    `server`: the host serves too, so its certificate and key must be there (a client needs the CA only).
    Raises TlsMaterialError naming a missing file and the command that makes it.
    """
    settings = topology.tls
    if not settings.enabled:
        return None
    files = TlsFiles(*(data_dir / path for path in (settings.ca, settings.cert, settings.key)))
    needed = [files.ca, files.cert, files.key] if server else [files.ca]
    for path in needed:
        if not path.is_file():
            raise TlsMaterialError(
                f"[tls] is enabled but {path} is missing: make the CA once (`bookstore tls init`), a "
                "certificate per host (`bookstore tls issue --host NAME --ip ADDRESS`), and copy the "
                f"host's directory to {data_dir / TLS_DIR}"
            )
    try:
        # Loaded once here so that a key that is not the certificate's, or a file that is no PEM, is
        # said in one line at start rather than in a listener's traceback.
        files.server_context() if server else files.client_context()
    except (ssl.SSLError, ValueError) as exc:
        raise TlsMaterialError(f"[tls] material in {data_dir / TLS_DIR} cannot be used: {exc}") from None
    return files


def uvicorn_settings(files: TlsFiles | None) -> dict[str, Any]:
    """uvicorn's settings for a listener that presents the host's certificate (none without TLS)."""
    if files is None:
        return {}
    return {"ssl_certfile": str(files.cert), "ssl_keyfile": str(files.key)}


def client_context(topology: Topology, data_dir: Path) -> ssl.SSLContext | None:
    """The context a client between hosts verifies servers with; None when [tls] is off (plain HTTP)."""
    files = tls_files(topology, data_dir, server=False)
    return files.client_context() if files is not None else None


def verify(topology: Topology, data_dir: Path) -> ssl.SSLContext | bool:
    """httpx's `verify=` for a client between hosts: the deployment's CA with [tls] on, else the default."""
    return client_context(topology, data_dir) or True
