"""The region process: serves what region.compose builds (API and S3 API) on its address, TLS if set."""

from __future__ import annotations

import gc
import logging
from collections.abc import Callable
from pathlib import Path
from types import FrameType
from typing import Any

import uvicorn

from bookstore.config import Topology
from bookstore.region.compose import compose
from bookstore.runtime import allocator, logs, tls, tracing
from bookstore.runtime.listeners import Limits, listening_socket, server_config

log = logging.getLogger("bookstore.region")

# The collector's thresholds in a region process (CPython's are 700, 10, 10). A catch-up keeps batches of
# thousands of entries in flight (queued lines, parsed entries, rows): with the default thresholds their
# objects reached the oldest generation and set off full collections of the whole heap every few batches,
# about 11 us of CPU per item on each side of a drain (docs/performance.md). Reference counting frees all
# of it anyway; only cycles wait for the collector, a little longer now. The youngest generation counts
# objects made less objects freed, so a drain's set in flight swings it by a batch: a catch-up batch of
# 10,000 entries holds about 60,000 tracked objects (six an entry), which passed 50,000 and set off a
# collection every few lines walking the batches in flight, 1.3 us per entry received (gc callbacks in
# bench.catch_up_instructions' receiver); at 200,000 such swings seldom reach a collection.
GC_THRESHOLDS = (200_000, 20, 10)


def serve(topology: Topology, region_id: str, data_dir: Path) -> None:
    """Serve one region (API and S3 API) until SIGINT/SIGTERM."""
    # Checked before anything starts: a region without its certificate must not serve in plain text.
    material = tls.tls_files(topology, data_dir)
    logs.configure(region_id, log_format=topology.observability.log_format)
    # Chosen once, here: without somewhere to send traces no tracing hook is installed at all.
    composed = compose(topology, region_id, data_dir, tracing.configure(topology, region_id))
    settle()
    region = composed.services.region
    try:
        sockets = [listening_socket(region.listen_address, region.api_port)]
        if composed.serves_s3:
            sockets.append(listening_socket(region.listen_address, region.s3_port))
        # With TLS between hosts, both ports (API with replication and blog, S3) present the host's.
        config = server_settings(composed.app, **tls.uvicorn_settings(material))
        _RegionServer(config, on_exit=composed.end_streams).run(sockets=sockets)
    finally:
        composed.services.close()
        if composed.tracing is not None:
            composed.tracing.shutdown()


def settle() -> None:
    """Tune the process once start-up is done: the collector's thresholds, malloc's (see above)."""
    # What start-up built lives as long as the process: kept out of every later collection.
    gc.freeze()
    gc.set_threshold(*GC_THRESHOLDS)
    allocator.keep_freed_buffers()


def server_settings(app: Any, **settings: Any) -> uvicorn.Config:
    """The uvicorn settings a region serves `app` with (bench/ceiling.py serves its anchors with them too).

    `settings` adds to them (TLS files).
    """
    return server_config(
        app,
        # Idle connections stay open 65 s (uvicorn's default is 5): peers reach this region through
        # links where every new connection costs a round trip (objects.client.KEEPALIVE_S is below).
        limits=Limits(keep_alive_s=65),
        lifespan="on",
        timeout_graceful_shutdown=3,
        # X-Forwarded-For is anyone's to send: the client address comes from the edge's signed header.
        proxy_headers=False,
        **settings,
    )


class _RegionServer(uvicorn.Server):
    """Ends the long-lived replication streams as soon as shutdown begins, so it need not wait for them."""

    def __init__(self, config: uvicorn.Config, on_exit: Callable[[], None]) -> None:
        super().__init__(config)
        self.on_exit = on_exit

    def handle_exit(self, sig: int, frame: FrameType | None) -> None:
        self.on_exit()
        super().handle_exit(sig, frame)
