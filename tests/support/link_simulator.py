"""The link simulator on its own event loop in a thread of the test process, as the supervisor runs it."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from contextlib import contextmanager

from bookstore.config import Topology
from bookstore.netsim.simulator import LinkSimulator


@contextmanager
def links(topology: Topology) -> Iterator[None]:
    """Every link of `topology` forwarding (with its delays) while the block runs."""
    loop = asyncio.new_event_loop()
    thread = threading.Thread(target=loop.run_forever, daemon=True)
    thread.start()
    simulator = LinkSimulator(topology)
    asyncio.run_coroutine_threadsafe(simulator.start(), loop).result(10)
    try:
        yield
    finally:
        asyncio.run_coroutine_threadsafe(simulator.stop(), loop).result(10)
        loop.call_soon_threadsafe(loop.stop)
        thread.join(5)
