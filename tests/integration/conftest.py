"""Fixtures the integration tests share: an API client checked against /openapi.json, an S3 API."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from bookstore.region.compose import region_app
from bookstore.region.services import RegionServices
from tests.support.openapi_check import CheckedClient
from tests.support.s3_server import S3Server, s3_server


@pytest.fixture
def client(services: RegionServices) -> Iterator[CheckedClient]:
    """The region's API with its stream consumers running; an answer /openapi.json does not describe fails."""
    with CheckedClient(region_app(services), raise_server_exceptions=False) as c:
        yield c


@pytest.fixture
def server(tmp_path: Path) -> Iterator[S3Server]:
    """One S3 API on a loopback port over a fresh local object store (the S3 modules' boto3 tests)."""
    with s3_server(tmp_path / "objects") as running:
        yield running
