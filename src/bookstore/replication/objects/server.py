"""The server side between regions' S3 ports: forwarded S3 requests, replica writes, version reads,
bucket lookups and pings, under INTERNAL_PREFIX of the S3 port; client.PeerS3 sends them.

They answer only requests signed with the deployment's shared secret (PeerAuthMiddleware checks it
before any of them runs). No object's content is held whole: a forwarded PUT's body and a replica's are
spooled as they arrive, a version read streams from the store's file as the peer takes it.
`create_region_s3_app` is the S3 API of a region with these endpoints, when it serves a cluster.
"""

from __future__ import annotations

import logging
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import orjson
from starlette.concurrency import run_in_threadpool
from starlette.requests import Request
from starlette.responses import Response, StreamingResponse
from starlette.types import ASGIApp

from bookstore.domain.errors import BookstoreError, StorageError
from bookstore.kernel.auth import PeerAuthMiddleware
from bookstore.kernel.clock import SystemClock
from bookstore.kernel.link_faults import LinkFaults
from bookstore.objectstore import encryption
from bookstore.objectstore import headers as rules
from bookstore.objectstore.app import S3Api, S3Asgi
from bookstore.objectstore.encryption import CustomerKey
from bookstore.objectstore.errors import InvalidRequest, MethodNotAllowed, code_and_status
from bookstore.objectstore.namespace import Cluster
from bookstore.objectstore.peer import INTERNAL_PREFIX
from bookstore.objectstore.port import Body, ObjectStore, check_key
from bookstore.objectstore.request import INLINE_BODY, MAX_PUT, receive
from bookstore.objectstore.sigv4 import UNSIGNED_PAYLOAD, Authorized, PayloadReader
from bookstore.ports import Clock
from bookstore.replication.objects.wire import (
    BATCH_MAX_BYTES,
    BATCH_PATH,
    BUCKETS_PATH,
    CUSTOMER_KEY_HEADER,
    FORWARD_PATH,
    FORWARDED_HEADERS,
    OBJECTS_PATH,
    PING_PATH,
    VERSION_HEADER,
    body_size,
    decode_batch,
    decode_fields,
    digest,
    encode_fields,
    encode_results,
    replica_from_fields,
    version_fields,
)

log = logging.getLogger("bookstore.replication.objects")


def create_region_s3_app(
    store: ObjectStore,
    credentials: Mapping[str, str],
    region: str,
    *,
    clock: Clock | None = None,
    cluster: Cluster[Any] | None = None,
    secret: str | None = None,
    staging: Path | None = None,
    links: LinkFaults | None = None,
) -> ASGIApp:
    """The S3 API of `region` over `store` (objectstore.app); with `cluster` it serves every region's
    buckets and answers the endpoints between regions, signed with the deployment's `secret` (`links`:
    the region's links made faulty on purpose: cut peers refused, slowed ones answered late).
    """
    api = S3Api(store, credentials, region, clock, cluster, staging)
    app = S3Asgi(api)
    if cluster is None:
        return app
    if not secret:
        raise ValueError("an S3 API that serves a cluster needs the deployment's shared secret")
    api.internal = PeerEndpoints(api).handle
    return PeerAuthMiddleware(
        app,
        secret,
        clock or SystemClock(),
        destination=region,
        protected_prefix=INTERNAL_PREFIX,
        max_body_bytes=MAX_PUT + 1024 * 1024,
        links=links,
    )


class PeerEndpoints:
    """The endpoints between regions over one region's S3 API and its store."""

    def __init__(self, api: S3Api) -> None:
        self.api = api

    async def handle(self, request: Request, method: str, peer: str) -> Response:
        """Answer a request from region `peer`; PeerAuthMiddleware has checked its signature."""
        path = request.scope["path"]
        if path == FORWARD_PATH:
            return await self._forwarded(request, method, peer)
        if path == OBJECTS_PATH and method == "PUT":
            return await self._put_replica(request)
        if path == BATCH_PATH and method == "POST":
            return await self._put_replicas(request)
        if path == OBJECTS_PATH and method == "GET":
            return await self._get_version(request)
        if path == BUCKETS_PATH and method == "GET":
            held = await self.api.run(self.api.store.get_bucket, request.query_params.get("name", ""))
            return Response(
                orjson.dumps({"name": held.name, "region": held.region, "createdMs": held.created_ms}),
                media_type="application/json",
            )
        if path == PING_PATH:
            return Response(b"pong", media_type="text/plain")
        raise MethodNotAllowed("The specified method is not allowed against this resource.")

    async def _put_replica(self, request: Request) -> Response:
        api = self.api
        encoded = request.headers.get(VERSION_HEADER, "")
        if digest(encoded) != request.query_params.get("version"):
            raise InvalidRequest("the replica's version does not match the signed request")
        try:
            described = replica_from_fields(decode_fields(encoded))
        except ValueError as exc:
            raise InvalidRequest(f"the replica's version is malformed: {exc}") from exc
        version, parts, seal = described.version, described.parts, described.seal
        # A sealed (SSE-C) body is as its source stored it: each piece's IV and ciphertext.
        size = body_size(version, seal)
        declared = request.headers.get("content-length")
        if declared is not None and declared != str(size):
            # Refused before any of it is spooled: that body cannot be the version's.
            raise InvalidRequest(
                f"the replica's body declares {declared[:20]} bytes; its version says {size}"
            )
        payload = await receive(request, PayloadReader(), request.headers, MAX_PUT, api.staging)
        try:
            if payload.size != size:
                raise InvalidRequest(
                    f"the replica's body holds {payload.size} bytes; its version says {size}"
                )
            small = payload.size <= INLINE_BODY
            replica: Body = payload.read(payload.size) if small else payload.chunks()
            written = await api.run(api.store.put_replica, version, replica, parts, seal, big=not small)
        finally:
            payload.close()
        return Response(
            orjson.dumps({"versionId": written.version_id, "status": written.replication_status}),
            media_type="application/json",
        )

    async def _put_replicas(self, request: Request) -> Response:
        """A batch of small replicas (wire.encode_batch), written together, each with its parts and seal as
        `_put_replica` writes one; a result per replica, so that one refused (no such bucket, versioning
        off, bad digest, parts that do not add up, a sealed one without its seal) is retried alone."""
        declared = request.headers.get("content-length", "")
        if not declared.isdigit() or int(declared) > BATCH_MAX_BYTES:
            raise InvalidRequest(f"a batch of replicas declares its length, at most {BATCH_MAX_BYTES} bytes")
        data = await request.body()
        try:
            replicas = decode_batch(data)
        except ValueError as exc:
            raise InvalidRequest(f"the batch of replicas is malformed: {exc}") from exc
        outcomes = await self.api.run(self.api.store.put_replicas, replicas, big=len(data) > INLINE_BODY)
        results: list[dict[str, Any]] = []
        for outcome in outcomes:
            error = outcome.error
            if error is None:
                results.append({"status": 200})
                continue
            if not isinstance(error, BookstoreError):
                log.error("a replica of a batch failed", exc_info=error)
                error = StorageError(f"{type(error).__name__}: {error}")
            code, status = code_and_status(error)
            results.append({"status": status, "code": code, "message": error.message})
        return Response(encode_results(results), media_type="application/json")

    async def _get_version(self, request: Request) -> Response:
        query = request.query_params
        bucket, key = query.get("bucket", ""), check_key(query.get("key", ""))
        wanted = query.get("range")
        content = await run_in_threadpool(
            self.api.store.get_object,
            bucket,
            key,
            version_id=query.get("versionId") or None,
            byte_range=rules.byte_range(wanted) if wanted else None,
            customer_key=_customer_key(request),
        )
        status = 206 if content.partial else 200
        out = {VERSION_HEADER: encode_fields(version_fields(content.version))}
        if isinstance(content.body, list | tuple):
            return Response(b"".join(content.body), status_code=status, headers=out)
        # Streamed from the store's file as the peer takes it, never read whole.
        out["content-length"] = str(max(0, content.last - content.first + 1))
        return StreamingResponse(content.body, status_code=status, headers=out)

    async def _forwarded(self, request: Request, method: str, peer: str) -> Response:
        query = request.query_params
        encoded = request.headers.get(FORWARDED_HEADERS, "")
        if digest(encoded) != query.get("headers"):
            raise InvalidRequest("the forwarded headers do not match the signed request")
        try:
            headers = {str(k).lower(): str(v) for k, v in decode_fields(encoded).items()}
        except ValueError as exc:
            raise InvalidRequest(f"the forwarded headers are malformed: {exc}") from exc
        raw_path, _, raw_query = query.get("target", "").partition("?")
        if not raw_path.startswith("/"):
            raise InvalidRequest("a forwarded request needs its target")
        # The body comes decoded: this hop's Content-Length is its length, and bounds it as it arrives.
        length = request.headers.get("content-length")
        if length is not None:
            headers["content-length"] = length
        # The region that forwarded this request checked its signature and decoded its payload.
        auth = Authorized(f"region:{peer}", UNSIGNED_PAYLOAD, "", b"", "", "", False)
        return await self.api.serve_forwarded(request, method, raw_path, raw_query, headers, auth)


def _customer_key(request: Request) -> CustomerKey | None:
    """The SSE-C key a peer sent for this read (a copy source), checked as a client's; never stored."""
    encoded = request.headers.get(CUSTOMER_KEY_HEADER)
    if encoded is None:
        return None
    if digest(encoded) != request.query_params.get("sseKey"):
        raise InvalidRequest("the customer key does not match the signed request")
    try:
        sent = decode_fields(encoded)
    except ValueError as exc:
        raise InvalidRequest(f"the customer key is malformed: {exc}") from exc
    return encryption.customer_key(
        {
            encryption.CUSTOMER + "algorithm": "AES256",
            encryption.CUSTOMER + "key": str(sent.get("key", "")),
            encryption.CUSTOMER + "key-md5": str(sent.get("md5", "")),
        }
    )
