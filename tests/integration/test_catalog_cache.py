"""The catalog's in-memory cache follows the Books stream: changes from anywhere replace what it answers."""

from __future__ import annotations

import pytest

from bookstore.domain.errors import NotFound
from bookstore.region.services import RegionServices
from bookstore.services.catalog import Catalog
from bookstore.storage.sqlite.tables import SqliteDatabase
from bookstore.tables import BOOKS

BOOK = "bk-cook-001"


def repriced(services: RegionServices, price: float) -> dict[str, object]:
    return {**services.catalog.get(BOOK), "price": price}


def test_a_change_to_the_table_is_answered_after_the_consumer_polls(services: RegionServices) -> None:
    catalog = services.catalog
    cookbooks = catalog.list("Cookbooks")
    assert catalog.get(BOOK)["price"] != 1.25

    # As a change replicated from another region arrives: straight into the table.
    services.tables["books"].put(repriced(services, 1.25))
    catalog.consumer.poll_once()

    assert catalog.get(BOOK)["price"] == 1.25
    assert next(b for b in catalog.list("Cookbooks") if b["id"] == BOOK)["price"] == 1.25
    assert len(catalog.list("Cookbooks")) == len(cookbooks)


def test_a_write_by_another_process_is_seen_too(services: RegionServices) -> None:
    catalog = services.catalog
    catalog.get(BOOK)
    catalog.consumer.poll_once()

    # `bookstore seed` or any other process writes the region's file through a handle of its own.
    with SqliteDatabase(services.data_dir / "tables.db", services.region.id) as other:
        other.table(BOOKS).delete({"id": BOOK})
    catalog.consumer.poll_once()

    assert BOOK not in {b["id"] for b in catalog.list()}
    with pytest.raises(NotFound):
        catalog.get(BOOK)


def test_loading_the_catalog_replaces_the_cache_at_once(services: RegionServices) -> None:
    catalog = services.catalog
    old = catalog.get(BOOK)
    assert catalog.load([{**old, "name": "A New Title"}]) == 1
    assert catalog.get(BOOK)["name"] == "A New Title"


def test_a_cached_search_follows_the_books_stream(services: RegionServices) -> None:
    search, books = services.search, services.tables["books"]
    while search.consumer.poll_once():
        pass
    first = search.search("skillet")
    assert [b["id"] for b in first] == ["bk-cook-002"] and search.search("skillet") == first

    # A book deleted since is left out at once, though the index (and its cached ranking) still has it.
    old = books.delete({"id": "bk-cook-002"})
    assert old is not None and search.search("skillet") == []
    # A new book is found once the index has it: applying the batch empties the cached rankings.
    books.put({**old, "id": "bk-cook-902", "name": "The Second Skillet"})
    while search.consumer.poll_once():
        pass
    assert [b["id"] for b in search.search("skillet")] == ["bk-cook-902"]


def test_changes_are_applied_to_the_cached_lists_as_a_fresh_read_would_list_them(
    services: RegionServices,
) -> None:
    catalog, books = services.catalog, services.tables["books"]
    while catalog.consumer.poll_once():
        pass
    before = {category: catalog.list(category) for category in (None, "Cookbooks", "Mystery")}
    answered = list(before["Cookbooks"])
    moved = {**catalog.get("bk-cook-003"), "category": "Mystery"}
    books.put(moved)
    books.put({**moved, "id": "bk-aaa-000", "category": "Cookbooks", "name": "First of all"})
    books.put({**moved, "id": "bk-zzz-999", "category": "Cookbooks", "name": "Last of all"})
    books.delete({"id": BOOK})
    books.put(repriced_of(before["Cookbooks"][1], 2.5))
    catalog.consumer.poll_once()

    fresh = Catalog(books)
    for category in before:
        assert catalog.list(category) == fresh.list(category), category
    assert before["Cookbooks"] == answered, "a list already answered never changes"
    assert catalog.get("bk-cook-003")["category"] == "Mystery"


def repriced_of(book: dict[str, object], price: float) -> dict[str, object]:
    return {**book, "price": price}
