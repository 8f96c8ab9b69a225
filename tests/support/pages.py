"""Reading a paged list of the API to its end, as a client must once a list outgrows one page."""

from __future__ import annotations

from typing import Any

import httpx

from bookstore.api.paging import NEXT_CURSOR


def every_page(api: httpx.Client, path: str, headers: dict[str, str] | None = None) -> list[Any]:
    """Every item of the paged list at `path`, following X-Next-Cursor to the last page."""
    items: list[Any] = []
    params: dict[str, str] = {}
    while True:
        answer = api.get(path, params=params, headers=headers)
        answer.raise_for_status()
        items.extend(answer.json())
        cursor = answer.headers.get(NEXT_CURSOR)
        if cursor is None:
            return items
        params = {"cursor": cursor}
