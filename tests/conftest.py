"""Fixtures shared by every test layer."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from bookstore.config import Topology
from bookstore.region.compose import build_region, region_app
from bookstore.region.services import RegionServices
from bookstore.services.catalog import seed_books


@pytest.fixture
def services(tmp_path: Path) -> Iterator[RegionServices]:
    """The home region's services on the embedded default, seeded, in this process."""
    region = build_region(Topology(), "eu-west-1", tmp_path)
    region.catalog.load(seed_books())
    yield region
    region.close()


@pytest.fixture
def client(services: RegionServices) -> Iterator[TestClient]:
    """The region's API with its stream consumers running."""
    with TestClient(region_app(services), raise_server_exceptions=False) as c:
        yield c
