"""The S3 API's ASGI app itself: what a server asks of it besides requests."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bookstore.kernel.clock import SystemClock
from bookstore.objectstore.app import create_s3_app
from bookstore.storage.local.objects import LocalObjectStore


def test_the_s3_app_answers_a_servers_lifespan(tmp_path: Path) -> None:
    store = LocalObjectStore(tmp_path / "objects", "eu-west-1", SystemClock())
    app = create_s3_app(store, {"AKIAEXAMPLE": "secret"}, "eu-west-1")
    incoming = iter([{"type": "lifespan.startup"}, {"type": "lifespan.shutdown"}])
    sent: list[str] = []

    async def receive() -> dict[str, str]:
        return next(incoming)

    async def send(message: dict[str, str]) -> None:
        sent.append(message["type"])

    try:
        asyncio.run(app({"type": "lifespan"}, receive, send))  # type: ignore[arg-type]
    finally:
        store.close()
    assert sent == ["lifespan.startup.complete", "lifespan.shutdown.complete"]
