"""One region's S3 API on a real uvicorn server on 127.0.0.1, over a local store, for attack tests."""

from __future__ import annotations

import socket
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import boto3
import httpx
import uvicorn
from botocore.auth import S3SigV4Auth
from botocore.awsrequest import AWSRequest
from botocore.config import Config
from botocore.credentials import Credentials

from bookstore.kernel.clock import SystemClock
from bookstore.objectstore.app import create_s3_app
from bookstore.storage.local import LocalObjectStore
from tests.support.threaded_server import serving

REGION = "ap-southeast-1"
KEY, SECRET = "AKIDBOOKSTORETEST", "bookstore-test-secret"


@dataclass
class S3Server:
    """A running S3 API: its endpoint and the store behind it (to check what a request changed)."""

    endpoint: str
    store: LocalObjectStore
    port: int

    def client(self, **config: Any) -> Any:
        """A boto3 S3 client with path-style addressing, SigV4 and no retries."""
        return boto3.client(
            "s3",
            endpoint_url=self.endpoint,
            region_name=REGION,
            aws_access_key_id=KEY,
            aws_secret_access_key=SECRET,
            config=Config(
                signature_version="s3v4",
                s3={"addressing_style": "path"},
                retries={"max_attempts": 1},
                **config,
            ),
        )

    def signed_headers(self, method: str, url: str, headers: dict[str, str] | None = None) -> dict[str, str]:
        """The headers of a request signed by botocore's S3 SigV4 signer.

        The payload is UNSIGNED-PAYLOAD unless `headers` give another x-amz-content-sha256.
        """
        given = dict(headers or {})
        payload = given.pop("x-amz-content-sha256", "UNSIGNED-PAYLOAD")
        request = AWSRequest(method=method, url=url, headers=given)
        _GivenPayload(Credentials(KEY, SECRET), "s3", REGION, payload).add_auth(request)
        return dict(request.headers.items())

    def signed(self, method: str, path: str, body: bytes = b"", headers: dict[str, str] | None = None) -> Any:
        """Send a signed request for `path` (already URL-encoded) with httpx."""
        url = self.endpoint + path
        return httpx.request(method, url, content=body, headers=self.signed_headers(method, url, headers))


class _GivenPayload(S3SigV4Auth):  # type: ignore[misc]  # botocore ships no types: its classes are Any
    """botocore's S3 signer, signing the x-amz-content-sha256 it is given instead of hashing the body."""

    def __init__(self, credentials: Credentials, service: str, region: str, payload: str) -> None:
        super().__init__(credentials, service, region)
        self._payload = payload

    def payload(self, request: AWSRequest) -> str:
        return self._payload


@contextmanager
def s3_server(root: Path) -> Iterator[S3Server]:
    """An S3 API over a LocalObjectStore in `root`, served by uvicorn on a free port of 127.0.0.1."""
    store = LocalObjectStore(root, REGION, SystemClock())
    app = create_s3_app(store, {KEY: SECRET}, REGION)
    # proto=IPPROTO_TCP: asyncio sets TCP_NODELAY only on such sockets (no delayed-ACK waits).
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM, socket.IPPROTO_TCP)
    sock.bind(("127.0.0.1", 0))
    try:
        with serving(uvicorn.Config(app, log_level="warning", lifespan="off"), sock) as (_, port):
            yield S3Server(f"http://127.0.0.1:{port}", store, port)
    finally:
        store.close()


def error_code(response: httpx.Response) -> str:
    """The <Code> of an S3 XML error answer, or ""."""
    text = response.text
    return text.split("<Code>", 1)[1].split("</Code>", 1)[0] if "<Code>" in text else ""


def raw_exchange(port: int, request: bytes, timeout: float = 10.0) -> bytes:
    """Send raw bytes to 127.0.0.1:`port`, return everything the server answers before closing."""
    with socket.create_connection(("127.0.0.1", port), timeout=timeout) as conn:
        conn.sendall(request)
        conn.shutdown(socket.SHUT_WR)
        chunks = []
        while True:
            try:
                chunk = conn.recv(65536)
            except TimeoutError:
                break
            if not chunk:
                break
            chunks.append(chunk)
    return b"".join(chunks)
