"""The command line's side of the operator commands: signed requests to a running region's API.

The region answers them under /replication/commands/ (bookstore.region.commands). A refusal comes back
as the domain error of its status, with the region's message; a region that does not answer raises
Unavailable naming it and its address.
"""

from __future__ import annotations

import ssl
from typing import Any

import httpx
import orjson

from bookstore.domain import errors
from bookstore.kernel.auth import PeerAuth
from bookstore.ports import Clock
from bookstore.replication.blog.wire import OPERATOR

PREFIX = "/replication/commands"
_ERRORS: dict[int, type[errors.BookstoreError]] = {
    400: errors.ValidationError,
    401: errors.Unauthorized,
    403: errors.Forbidden,
    404: errors.NotFound,
    409: errors.Conflict,
    503: errors.Unavailable,
}


class RegionCommands:
    """One region's operator commands over HTTP, signed as the operator with the deployment secret."""

    def __init__(
        self,
        region: str,
        api_url: str,
        secret: str,
        clock: Clock,
        timeout_s: float = 30.0,
        verify: ssl.SSLContext | bool = True,
    ) -> None:
        """`verify`: the deployment's CA with TLS between hosts (runtime.tls.verify)."""
        self.region = region
        self.url = api_url.rstrip("/")
        self.client = httpx.Client(
            auth=PeerAuth(secret, OPERATOR, clock, destination=region),
            timeout=timeout_s,
            verify=verify,
            headers={"content-type": "application/json"},
        )

    def __enter__(self) -> RegionCommands:
        return self

    def __exit__(self, *_: object) -> None:
        self.client.close()

    def add_user(self, email: str, password: str, role: str = "customer") -> dict[str, Any]:
        """{email, role, userId} of a new confirmed user; Conflict when the email exists."""
        return self._call("POST", "/users", {"email": email, "password": password, "role": role})

    def confirmation_code(self, email: str) -> str:
        return str(self._call("POST", "/confirmation-code", {"email": email})["code"])

    def conflicts(self, limit: int) -> dict[str, Any]:
        """{region, native, conflicts}: `native` when the engine replicates itself and reports none."""
        return self._call("GET", f"/conflicts?limit={int(limit)}")

    def seed(self) -> int:
        """How many seed books the region wrote (0 when it had them all)."""
        return int(self._call("POST", "/seed", {})["written"])

    def rotate_key(self, reencrypt: bool) -> dict[str, Any]:
        """The region's SSE-S3 keys after a new one is made (re-encryption then runs in its background)."""
        return self._call("POST", "/s3/rotate-key", {"reencrypt": reencrypt})

    def sse_keys(self) -> dict[str, Any]:
        """{region, keys, newest, retiringBelow, bodies}: the region's SSE-S3 keys and their bodies."""
        return self._call("GET", "/s3/keys")

    def _call(self, method: str, path: str, body: dict[str, Any] | None = None) -> dict[str, Any]:
        try:
            response = self.client.request(
                method, self.url + PREFIX + path, content=None if body is None else orjson.dumps(body)
            )
        except httpx.HTTPError as exc:
            raise errors.Unavailable(
                f"{self.region} does not answer at {self.url} ({type(exc).__name__})"
            ) from None
        try:
            parsed = orjson.loads(response.content)
        except orjson.JSONDecodeError:
            parsed = {"message": response.text[:300]}
        if response.status_code != 200:
            message = parsed.get("message") if isinstance(parsed, dict) else None
            error = _ERRORS.get(response.status_code, errors.BookstoreError)
            raise error(f"{self.region} refused ({response.status_code}): {message or response.text[:300]}")
        if not isinstance(parsed, dict):
            raise errors.ValidationError(f"{self.region} answered with something not an object")
        return parsed
