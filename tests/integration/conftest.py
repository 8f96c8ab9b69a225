"""The API integration tests' client checks every answer against the app's /openapi.json (issue 18)."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from bookstore.region.compose import region_app
from bookstore.region.services import RegionServices
from tests.support.openapi_check import CheckedClient


@pytest.fixture
def client(services: RegionServices) -> Iterator[CheckedClient]:
    """The region's API with its stream consumers running; an answer /openapi.json does not describe fails."""
    with CheckedClient(region_app(services), raise_server_exceptions=False) as c:
        yield c
