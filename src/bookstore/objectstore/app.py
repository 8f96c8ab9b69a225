"""The S3-compatible REST API of one region (path-style), over an ObjectStore, with SigV4 checked.

`create_s3_app(store, credentials, region)` returns the ASGI app of a single region. Every request must
be signed with AWS Signature Version 4 by a known access key (headers or a presigned URL); errors are S3
XML. Request bodies are read from the stream as they arrive, checked, and spooled (objectstore.bodies):
an object's content is never held whole in memory, and the store sees it only once it has all arrived.

The request is parsed (request.py), routed (dispatch.py) to its handler (buckets, bucket_configs,
objects, multipart). With a cluster (namespace.Cluster), the API serves every region's buckets: a
request for a bucket that lives in another region is checked here, then forwarded to that region
(context.S3Context.forward). Paths under peer.INTERNAL_PREFIX are the endpoints between regions, served
by `internal` (replication.objects.server builds the clustered app); without it they are refused.
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Awaitable, Callable, Mapping
from pathlib import Path
from typing import Any

from starlette.requests import Request
from starlette.responses import Response
from starlette.types import Receive, Scope, Send

from bookstore.domain.errors import BookstoreError, StorageError
from bookstore.objectstore import anonymous, cors, documents, expect
from bookstore.objectstore.context import S3Context
from bookstore.objectstore.dispatch import dispatch
from bookstore.objectstore.errors import AccessDenied, InvalidRange, MethodNotAllowed, code_and_status
from bookstore.objectstore.namespace import Cluster
from bookstore.objectstore.peer import INTERNAL_PREFIX
from bookstore.objectstore.port import ObjectStore
from bookstore.objectstore.request import Call, drain, raw_target, read_call
from bookstore.objectstore.sigv4 import Authorized, SigV4
from bookstore.ports import Clock

log = logging.getLogger("bookstore.objectstore")
# Where a request's id is kept in its ASGI scope (a forwarded request is answered under the same id).
REQUEST_ID = "bookstore.s3_request_id"

# The endpoints between regions: (request, method, peer region) -> answer.
Internal = Callable[[Request, str, str], Awaitable[Response]]


def create_s3_app(
    store: ObjectStore,
    credentials: Mapping[str, str],
    region: str,
    *,
    clock: Clock | None = None,
    staging: Path | None = None,
) -> S3Asgi:
    """The S3 API of `region` over `store`; `credentials` maps access key ids to secret keys.

    `clock` (epoch ms) decides signature expiry and skew; the wall clock when None. Request bodies
    beyond a MiB are spooled to unnamed files in `staging` (the system's temporary directory when None).
    """
    return S3Asgi(S3Api(store, credentials, region, clock, None, staging))


class S3Asgi:
    """The ASGI app that sends every request to its S3Api.

    Every path and method is the API's, which answers whatever it does not serve in S3 XML (405 for
    a method S3 has not): no router or middleware stands between a request and `S3Api.handle`, whose
    own try answers every error (a router's layers cost a small request about as much as its SigV4)."""

    def __init__(self, api: S3Api) -> None:
        self.api = api

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await _lifespan(receive, send)
            return
        response = await self.api.handle(Request(scope, receive, send))
        await response(scope, receive, send)


async def _lifespan(receive: Receive, send: Send) -> None:
    """Nothing to start or stop: said so, for a server that runs the app alone with lifespan on."""
    while True:
        message = await receive()
        if message["type"] == "lifespan.startup":
            await send({"type": "lifespan.startup.complete"})
        elif message["type"] == "lifespan.shutdown":
            await send({"type": "lifespan.shutdown.complete"})
            return


class S3Api(S3Context):
    """Checks, parses and answers S3 requests; one instance per region."""

    def __init__(
        self,
        store: ObjectStore,
        credentials: Mapping[str, str],
        region: str,
        clock: Clock | None = None,
        cluster: Cluster[Any] | None = None,
        staging: Path | None = None,
    ) -> None:
        super().__init__(store, region, clock, cluster, staging)
        now: Callable[[], float] = time.time if clock is None else self._now_s
        self.signer: SigV4 = SigV4(credentials, now)
        # The endpoints between regions, set by whoever serves a cluster (replication.objects.server).
        self.internal: Internal | None = None

    def _now_s(self) -> float:
        return self.now_ms() / 1000

    async def handle(self, request: Request) -> Response:
        # Request ids only need to be unique enough to find a request in logs, not unguessable.
        request_id = f"{random.getrandbits(64):016X}"
        request.scope[REQUEST_ID] = request_id
        method: str = request.scope["method"]
        call: Call | None = None
        try:
            if request.scope["path"].startswith(INTERNAL_PREFIX):
                response = await self._internal(request, method)
            else:
                raw_path, raw_query, headers = raw_target(request)
                auth = anonymous.authorize(self.signer, method, raw_path, raw_query, headers)
                if "expect" in headers and method in ("PUT", "POST") and expect.waits(headers):
                    await expect.check_bucket(self, method, raw_path)
                call = await read_call(
                    request, method, raw_path, raw_query, headers, auth, self.signer, staging=self.staging
                )
                response = await self._serve(call)
        except BookstoreError as exc:
            response = self._error(exc, method, request_id, request)
            await self._after_refusal(request, response)
        except Exception:
            log.exception("s3 %s: %s %s failed", self.region, method, request.url.path)
            internal = StorageError("We encountered an internal error. Please try again.")
            response = self._error(internal, method, request_id, request)
            await self._after_refusal(request, response)
        finally:
            if call is not None:
                call.close()
        if call is not None and "origin" in call.headers:
            await cors.decorate(self, call, response)
        # Appended as they are: no handler sets them, and MutableHeaders would look for them first.
        raw_id = request_id.encode()
        response.raw_headers += [(b"x-amz-request-id", raw_id), (b"x-amz-id-2", raw_id)]
        return response

    async def serve_forwarded(
        self,
        request: Request,
        method: str,
        raw_path: str,
        raw_query: str,
        headers: dict[str, str],
        auth: Authorized,
    ) -> Response:
        """Answer a request another region checked and forwarded here: its payload comes decoded."""
        auth = anonymous.forwarded_auth(headers, auth)
        call = await read_call(
            request, method, raw_path, raw_query, headers, auth, None, staging=self.staging
        )
        try:
            response = await self._serve(call)
        except BookstoreError as exc:
            if "origin" not in call.headers:
                raise
            # Answered here, not by `handle`, so that a browser sees the error with the bucket's CORS headers.
            response = self._error(exc, method, request.scope.get(REQUEST_ID, ""), request)
            await drain(request)
        finally:
            call.close()
        await cors.decorate(self, call, response)
        return response

    async def _after_refusal(self, request: Request, response: Response) -> None:
        """Drain a refused request's body, unless its client still waits to be asked for it."""
        if expect.unread(request):
            expect.close_after(response)
        else:
            await drain(request)

    async def _serve(self, call: Call) -> Response:
        if call.auth is anonymous.ANONYMOUS:
            return await anonymous.serve(self, call)
        return await dispatch(self, call)

    async def _internal(self, request: Request, method: str) -> Response:
        """The endpoints between regions; PeerAuthMiddleware has checked the shared-secret signature."""
        peer = request.scope.get("state", {}).get("peer_region")
        if self.cluster is None or self.internal is None or not peer:
            raise AccessDenied("Access Denied: this endpoint serves other regions only")
        return await self.internal(request, method, peer)

    def _error(self, exc: BookstoreError, method: str, request_id: str, request: Request) -> Response:
        code, status = code_and_status(exc)
        if status >= 500:
            log.warning(
                "s3 %s: %s %s -> %s %s: %s", self.region, method, request.url.path, status, code, exc.message
            )
        headers: dict[str, str] = {}
        extra: dict[str, str] = {"Resource": request.url.path}
        marker = getattr(exc, "delete_marker", False)
        if marker:
            headers["x-amz-delete-marker"] = "true"
            version_id = getattr(exc, "version_id", None)
            if version_id:
                headers["x-amz-version-id"] = version_id
        if isinstance(exc, MethodNotAllowed) and marker:
            headers["Allow"] = "DELETE"
            if exc.last_modified_ms is not None:
                headers["Last-Modified"] = documents.http_date(exc.last_modified_ms)
        if isinstance(exc, InvalidRange):
            headers["Content-Range"] = f"bytes */{exc.size}"
            extra["ActualObjectSize"] = str(exc.size)
        if method == "HEAD":
            return Response(status_code=status, headers=headers)
        body = documents.error(code, exc.message, request_id, extra)
        return Response(body, status_code=status, headers=headers, media_type="application/xml")
