"""The edge process (`bookstore edge serve`): the edge app on uvicorn, with limits on what a client may send.

The edge is a process of its own rather than a task in the supervisor: its request load must not
slow the link simulator (which carries all traffic between regions on the supervisor's event loop),
a region's crash must not touch it, and the benchmarks can give it its own core. The supervisor
starts it and stops it like a region.

The edge's listener has every listener's bounds (runtime.listeners: head bytes counted before the
parser, header deadline, idle timeout, connection cap) and tighter ones of its own: 414 to a URL over
MAX_URL_BYTES and 431 to headers over MAX_HEADER_BYTES (or more than MAX_HEADERS of them).
"""

from __future__ import annotations

import logging

import uvicorn

from bookstore.config import Topology
from bookstore.edge.app import EdgeApp
from bookstore.edge.operations import operations_app
from bookstore.edge.requests import MAX_HEADER_BYTES, MAX_HEADERS, MAX_URL_BYTES
from bookstore.runtime import listeners, logs, tracing
from bookstore.runtime.listeners import BoundedHttpProtocol, Limits, listening_socket
from bookstore.runtime.secret import Credentials

log = logging.getLogger("bookstore.edge")


class EdgeProtocol(BoundedHttpProtocol):
    """The listeners' bounded protocol with the edge's own, tighter bounds on the URL and the headers."""

    limits = Limits(max_head_bytes=MAX_URL_BYTES + MAX_HEADER_BYTES + 1024, max_headers=MAX_HEADERS)
    _url_bytes = 0

    def on_message_begin(self) -> None:
        self._url_bytes = 0
        super().on_message_begin()

    def on_url(self, url: bytes) -> None:
        self._url_bytes += len(url)
        if self._url_bytes > MAX_URL_BYTES:
            self._refuse(414, "URITooLong", f"the URL is longer than {MAX_URL_BYTES} bytes")
        super().on_url(url)

    def on_header(self, name: bytes, value: bytes) -> None:
        if self._header_bytes + len(name) + len(value) + 4 > MAX_HEADER_BYTES:
            self._refuse(
                431,
                "RequestHeaderFieldsTooLarge",
                f"at most {MAX_HEADERS} headers of {MAX_HEADER_BYTES} bytes in all",
            )
        super().on_header(name, value)


def build(
    topology: Topology,
    *,
    dns: bool = True,
    credentials: Credentials | None = None,
    traces: tracing.Tracing | None = None,
) -> EdgeApp:
    """The edge app with its /edge/ operations (`credentials`: see EdgeApp; `traces`: None, off)."""
    app = EdgeApp(topology, dns=dns, credentials=credentials, traces=traces)
    app.operations = operations_app(app)
    return app


def server_config(app: EdgeApp) -> uvicorn.Config:
    """The edge's uvicorn settings (its protocol, no proxy headers, no server or date header)."""
    return listeners.server_config(
        app,
        protocol=EdgeProtocol,
        lifespan="on",
        # X-Forwarded-For from a client is not to be trusted: the edge is the first hop.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=3,
    )


def serve(topology: Topology, credentials: Credentials) -> None:
    """Serve the edge at the topology's edge address until SIGINT/SIGTERM."""
    logs.configure("edge", log_format=topology.observability.log_format)
    edge = topology.edge
    # Chosen once, here: without somewhere to send traces no tracing hook is installed at all.
    traces = tracing.configure(topology, "edge")
    config = server_config(build(topology, credentials=credentials, traces=traces))
    try:
        uvicorn.Server(config).run(sockets=[listening_socket(edge.bind_address or edge.address, edge.port)])
    finally:
        if traces is not None:
            traces.shutdown()
