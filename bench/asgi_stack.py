"""`python -m bench.asgi_stack`: CPU per request of the API's ASGI stack in-process, no server or network.

Not a module of `make bench`: a steadier second opinion beside `python -m bench api` on a loaded machine,
where wrk's figures swing by a factor of two between runs. It calls the region's API app (the one
middleware, the hot paths, the services, SQLite) directly with ASGI messages and reports the best of three
rounds of process CPU time per request, for GET /books/{id} and POST /cart. uvicorn's and httptools'
share of a real request is not in it, so a difference here is an upper bound of the difference served.
"""

from __future__ import annotations

import asyncio
import tempfile
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import orjson

from bookstore.api.app import create_app
from bookstore.config import Topology
from bookstore.region.compose import build_region
from bookstore.services.catalog import seed_books

EMAIL = "stack@bench.example"
PASSWORD = "bench-password-42"
Headers = Sequence[tuple[bytes, bytes]]


def _scope(method: str, path: str, headers: Headers) -> dict[str, Any]:
    return {
        "type": "http",
        "asgi": {"version": "3.0"},
        "http_version": "1.1",
        "method": method,
        "scheme": "http",
        "path": path,
        "raw_path": path.encode(),
        "query_string": b"",
        "root_path": "",
        "headers": [(b"host", b"bench"), *headers],
        "client": ("127.0.0.1", 1),
        "server": ("127.0.0.1", 8000),
    }


async def _call(
    app: Any, method: str, path: str, body: bytes = b"", headers: Headers = ()
) -> tuple[int, bytes]:
    answer: dict[str, Any] = {}
    sent = False

    async def receive() -> dict[str, Any]:
        nonlocal sent
        if sent:
            await asyncio.sleep(3600)
        sent = True
        return {"type": "http.request", "body": body, "more_body": False}

    async def send(message: dict[str, Any]) -> None:
        if message["type"] == "http.response.start":
            answer["status"] = message["status"]
        elif message["type"] == "http.response.body":
            answer["body"] = message.get("body", b"")

    await app(_scope(method, path, headers), receive, send)
    return answer["status"], answer.get("body", b"")


async def _measure(app: Any) -> dict[str, float]:
    json = (b"content-type", b"application/json")
    status, body = await _call(
        app, "POST", "/auth/signin", orjson.dumps({"email": EMAIL, "password": PASSWORD}), [json]
    )
    assert status == 200, body
    auth = [(b"authorization", f"Bearer {orjson.loads(body)['accessToken']}".encode()), json]
    cart = orjson.dumps({"bookId": "bk-cook-001", "quantity": 1})
    requests: dict[str, tuple[int, tuple[str, str, bytes, Headers]]] = {
        "GET /books/{id}": (20_000, ("GET", "/books/bk-cook-001", b"", ())),
        "POST /cart": (4_000, ("POST", "/cart", cart, auth)),
    }
    for _, args in requests.values():
        for _ in range(500):
            await _call(app, *args)
    best: dict[str, float] = {}
    for label, (n, args) in requests.items():
        for _ in range(3):
            started = time.process_time()
            for _ in range(n):
                status, body = await _call(app, *args)
            assert status in (200, 201), body
            per = (time.process_time() - started) / n * 1e6
            best[label] = min(best.get(label, per), per)
    return best


def main() -> None:
    with tempfile.TemporaryDirectory() as data:
        services = build_region(Topology(), "eu-west-1", Path(data))
        try:
            services.catalog.load(seed_books())
            services.identity.add_user(EMAIL, PASSWORD)
            best = asyncio.run(_measure(create_app(services)))
        finally:
            services.close()
    print("  ".join(f"{label}: {us:.1f} us CPU/request" for label, us in best.items()))


if __name__ == "__main__":
    main()
