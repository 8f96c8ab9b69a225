"""Paged answers of the API: the page as the JSON list the original API answers, the next cursor in headers.

The body stays a plain list (clients of the workshop's API keep working); `X-Next-Cursor` carries the
cursor of the next page and `Link` the next page's query as a relative reference (`<?limit=..&cursor=..>`,
so it resolves right behind the edge's /api prefix too). Neither is sent on the last page.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any
from urllib.parse import urlencode

from bookstore.kernel.http import JSON

NEXT_CURSOR = "X-Next-Cursor"
# The 200 answer's headers, for the OpenAPI document (generated clients and the schema fuzzer read them).
PAGE_HEADERS: dict[str, dict[str, Any]] = {
    NEXT_CURSOR: {
        "description": "the cursor of the next page (pass it as `cursor`); absent on the last page",
        "schema": {"type": "string"},
    },
    "Link": {"description": 'the next page: <?...&cursor=...>; rel="next"', "schema": {"type": "string"}},
}


def page_answer(items: list[Any], next_cursor: str | None, query: Mapping[str, Any]) -> JSON:
    """The page; with the next page's cursor in headers when there is one."""
    if next_cursor is None:
        return JSON(items)
    params = {name: value for name, value in query.items() if value is not None and name != "cursor"}
    link = "?" + urlencode({**params, "cursor": next_cursor})
    return JSON(items, headers={NEXT_CURSOR: next_cursor, "Link": f'<{link}>; rel="next"'})
