"""Fixtures of the attack tests: Chromium (required in CI), and a hostile web server on loopback."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from tests.support.prerequisites import require_binary
from tests.support.s3_server import S3Server, s3_server


def require_chromium() -> None:
    """Skip without Chromium, with the reason; in CI (CI=true) a missing Chromium is a failure."""
    require_binary("chromium")


@dataclass
class HostileSite:
    """A web server of an attacker, on its own origin: serves the pages it is given, by path."""

    url: str
    pages: dict[str, str] = field(default_factory=dict)

    def serve(self, path: str, html: str) -> str:
        self.pages[path] = html
        return self.url + path


@pytest.fixture
def hostile_site() -> Iterator[HostileSite]:
    """A hostile site on 127.0.0.1 (a port of its own, so an origin of its own)."""
    pages: dict[str, str] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            body = pages.get(self.path.split("?")[0])
            data = (body or "not here").encode()
            self.send_response(200 if body is not None else 404)
            self.send_header("content-type", "text/html; charset=utf-8")
            self.send_header("content-length", str(len(data)))
            self.end_headers()
            self.wfile.write(data)

        def log_message(self, *_: object) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    site = HostileSite(f"http://127.0.0.1:{server.server_address[1]}", pages)
    yield site
    server.shutdown()
    server.server_close()
    thread.join(5)


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    """One S3 API on uvicorn over a local store of its own."""
    with s3_server(tmp_path / "objects") as running:
        yield running
