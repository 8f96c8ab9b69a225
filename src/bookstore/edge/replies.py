"""The answers the edge writes itself (refusals, HEAD answers, passed-on bodies) and its answer headers."""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from starlette.types import Send

from bookstore.edge.upstream import Answer

# Answer headers the edge never passes on: hop-by-hop ones and the framing it sets itself.
# The region's X-Request-Id is dropped too: the edge answers with the id it gave the request (the same).
DROPPED_ANSWER = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"transfer-encoding",
        b"content-length",
        b"server",
        b"upgrade",
        b"trailer",
        b"x-request-id",
    }
)
VIA = (b"via", b"1.1 bookstore-edge")
_JSON = (b"content-type", b"application/json")


@dataclass(slots=True)
class Reply:
    """A whole answer for the client, without its Content-Length; `length`: a HEAD answer's (no body)."""

    status: int
    headers: list[tuple[bytes, bytes]]
    body: bytes
    length: bytes | None = None


def error_reply(
    status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> Reply:
    """A JSON error answer, like every error of the system."""
    return Reply(status, [_JSON, VIA, *(extra or ())], error_body(code, message))


def error_body(code: str, message: str) -> bytes:
    return orjson.dumps({"error": code, "message": message})


async def respond(
    send: Send, status: int, headers: list[tuple[bytes, bytes]], body: bytes, head: bool = False
) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [*headers, (b"content-length", str(len(body)).encode("ascii"))],
        }
    )
    await send({"type": "http.response.body", "body": b"" if head else body})


async def respond_error(
    send: Send, status: int, code: str, message: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", b"application/json"), VIA, *(extra or [])]
    await respond(send, status, headers, error_body(code, message))


async def head_response(send: Send, answer: Answer, headers: list[tuple[bytes, bytes]]) -> None:
    """A HEAD answer: the origin's headers with its Content-Length, no body."""
    length = answer.header(b"content-length") or b"0"
    await send(
        {
            "type": "http.response.start",
            "status": answer.status,
            "headers": [*headers, (b"content-length", length)],
        }
    )
    await send({"type": "http.response.body", "body": b""})


async def send_reply(send: Send, reply: Reply) -> None:
    """A Reply as ASGI messages."""
    length = reply.length if reply.length is not None else str(len(reply.body)).encode("ascii")
    headers = [*reply.headers, (b"content-length", length)]
    await send({"type": "http.response.start", "status": reply.status, "headers": headers})
    await send({"type": "http.response.body", "body": reply.body})
