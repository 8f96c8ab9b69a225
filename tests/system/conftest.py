"""The `layout` fixture: a system test that takes it runs once per layout, `[one-machine]` and `[hosts]`."""

from __future__ import annotations

import pytest

from tests.support.layouts import LAYOUTS, Layout, layout_for


@pytest.fixture(params=LAYOUTS, ids=str)
def layout(request: pytest.FixtureRequest) -> Layout:
    return layout_for(request)
