"""The edge process (`bookstore edge serve`): the edge app on uvicorn, with limits on what a client may send.

The edge is a process of its own rather than a task in the supervisor: its request load must not
slow the link simulator (which carries all traffic between regions on the supervisor's event loop),
a region's crash must not touch it, and the benchmarks can give it its own core. The supervisor
starts it and stops it like a region.

uvicorn's httptools protocol puts no bound on the request line or the headers; the edge's protocol
answers 414 to a URL over MAX_URL_BYTES and 431 to headers over MAX_HEADER_BYTES (or more than
MAX_HEADERS of them) as they arrive, before buffering any more of them.
"""

from __future__ import annotations

import contextlib
import logging

import uvicorn

from bookstore.config import Topology
from bookstore.edge.app import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES, EdgeApp, error_body
from bookstore.edge.operations import operations_app
from bookstore.runtime import logs
from bookstore.runtime.coalescing import CoalescingHttpToolsProtocol
from bookstore.runtime.region import listening_socket
from bookstore.runtime.secret import Credentials

log = logging.getLogger("bookstore.edge")

_REASONS = {414: b"URI Too Long", 431: b"Request Header Fields Too Large"}


class _TooMuch(Exception):
    pass


class EdgeProtocol(CoalescingHttpToolsProtocol):
    """uvicorn's httptools protocol with bounds on the request line and the headers, one write per answer."""

    _url_bytes = 0
    _header_bytes = 0
    _header_count = 0
    _refused = False

    def on_message_begin(self) -> None:
        self._url_bytes = self._header_bytes = self._header_count = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refuse(414, f"the URL is longer than {MAX_URL_BYTES} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        self._header_bytes += len(name) + len(value) + 4
        self._header_count += 1
        if self._header_bytes > MAX_HEADER_BYTES or self._header_count > MAX_HEADERS:
            self._refuse(431, f"at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all")
        super().on_header(name, value)

    def _refuse(self, status: int, message: str) -> None:
        body = error_body("RequestHeaderFieldsTooLarge" if status == 431 else "URITooLong", message)
        head = (
            b"HTTP/1.1 %d %s\r\ncontent-type: application/json\r\n"
            b"content-length: %d\r\nconnection: close\r\n\r\n"
        )
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head % (status, _REASONS[status], len(body)) + body)
            self.transport.close()
        self._refused = True
        raise _TooMuch

    def data_received(self, data: bytes) -> None:
        if self._refused:
            return
        with contextlib.suppress(_TooMuch):
            super().data_received(data)

    def send_400_response(self, msg: str) -> None:
        # A callback that refused the request already answered it; the parser's error follows it here.
        if self._refused:
            return
        self._refused = True
        body = error_body("BadRequest", "malformed HTTP request: check the request line, headers and framing")
        head = b"HTTP/1.1 400 Bad Request\r\ncontent-type: application/json\r\ncontent-length: %d\r\n"
        if self.transport is not None and not self.transport.is_closing():
            self.transport.write(head % len(body) + b"connection: close\r\n\r\n" + body)
            self.transport.close()


def build(topology: Topology, *, dns: bool = True, credentials: Credentials | None = None) -> EdgeApp:
    """The edge app with its /edge/ operations (`credentials`: see EdgeApp)."""
    app = EdgeApp(topology, dns=dns, credentials=credentials)
    app.operations = operations_app(app)
    return app


def server_config(app: EdgeApp) -> uvicorn.Config:
    """The edge's uvicorn settings (its protocol, no proxy headers, no server or date header)."""
    return uvicorn.Config(
        app,
        http=EdgeProtocol,
        log_config=None,
        access_log=False,
        lifespan="on",
        # X-Forwarded-For from a client is not to be trusted: the edge is the first hop.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_keep_alive=65,
        timeout_graceful_shutdown=3,
    )


def serve(topology: Topology, credentials: Credentials) -> None:
    """Serve the edge at the topology's edge address until SIGINT/SIGTERM."""
    logs.configure("edge")
    edge = topology.edge
    config = server_config(build(topology, credentials=credentials))
    uvicorn.Server(config).run(sockets=[listening_socket(edge.address, edge.port)])
