"""The edge process (`bookstore edge serve`): the edge app on uvicorn, with limits on what a client may send.

The edge is a process of its own rather than a task in the supervisor: its request load must not
slow the link simulator (which carries all traffic between regions on the supervisor's event loop),
a region's crash must not touch it, and the benchmarks can give it its own core. The supervisor
starts it and stops it like a region.

Bodiless GET and HEAD requests to /api/ and /blog/ are served by the edge's own protocol
(connection.EdgeConnection), which hands a connection with anything else to the listener's.
The edge's listener (listener.EdgeProtocol) has every listener's bounds (runtime.listeners: head bytes
counted before the parser, header deadline, idle timeout, connection cap) and tighter ones of its own,
and serves /api/ and /blog/ itself, calling the app's proxy without ASGI. This module is the edge's
composition root: the app, its operations, the listener's protocol and uvicorn's settings.
"""

from __future__ import annotations

import logging
import ssl

import uvicorn

from bookstore.config import Topology
from bookstore.edge.app import EdgeApp
from bookstore.edge.connection import EdgeConnection
from bookstore.edge.listener import EdgeProtocol
from bookstore.edge.operations import operations_app
from bookstore.runtime import listeners, logs, tracing
from bookstore.runtime.listeners import listening_socket
from bookstore.runtime.secret import Credentials

log = logging.getLogger("bookstore.edge")


def build(
    topology: Topology,
    *,
    dns: bool = True,
    credentials: Credentials | None = None,
    traces: tracing.Tracing | None = None,
    tls: ssl.SSLContext | None = None,
) -> EdgeApp:
    """The edge app with its /edge/ operations (`credentials`, `tls`: see EdgeApp; `traces`: None, off)."""
    app = EdgeApp(topology, dns=dns, credentials=credentials, traces=traces, tls=tls)
    app.operations = operations_app(app)
    return app


def server_config(app: EdgeApp) -> uvicorn.Config:
    """The edge's uvicorn settings (its protocol, no proxy headers, no server or date header)."""
    return listeners.server_config(
        app,
        # Traced, every request goes through the app's middleware (its spans): the listener's protocol.
        protocol=EdgeConnection if app.direct_proxy else EdgeProtocol,
        lifespan="on",
        # X-Forwarded-For from a client is not to be trusted: the edge is the first hop.
        proxy_headers=False,
        server_header=False,
        date_header=False,
        timeout_graceful_shutdown=3,
    )


def serve(topology: Topology, credentials: Credentials, tls: ssl.SSLContext | None = None) -> None:
    """Serve the edge at the topology's edge address until SIGINT/SIGTERM (`tls`: to the regions)."""
    logs.configure("edge", log_format=topology.observability.log_format)
    edge = topology.edge
    # Chosen once, here: without somewhere to send traces no tracing hook is installed at all.
    traces = tracing.configure(topology, "edge")
    config = server_config(build(topology, credentials=credentials, traces=traces, tls=tls))
    try:
        uvicorn.Server(config).run(sockets=[listening_socket(edge.bind_address or edge.address, edge.port)])
    finally:
        if traces is not None:
            traces.shutdown()
