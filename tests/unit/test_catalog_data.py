"""Checks of the seed catalog data file and its generated cover images."""

from __future__ import annotations

import json
import re
import xml.etree.ElementTree as ET
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

DATA = Path(__file__).resolve().parents[2] / "src" / "bookstore" / "data"
SVG = "{http://www.w3.org/2000/svg}"

# The original demo catalog's shape (seed-notes: "Data model of the original").
EXPECTED_COUNTS = {
    "Cookbooks": 26,
    "Database": 10,
    "Fairy Tales": 5,
    "Science Fiction": 4,
    "Home Improvement": 4,
    "Woodwork": 4,
    "Cars": 3,
}


def load_books() -> list[dict[str, Any]]:
    books = json.loads((DATA / "books.json").read_text(encoding="utf-8"))
    assert isinstance(books, list)
    return books


BOOKS = load_books()


def test_counts_per_category_match_the_original() -> None:
    assert len(BOOKS) == 56
    assert Counter(b["category"] for b in BOOKS) == EXPECTED_COUNTS


def test_every_book_has_exactly_the_book_fields() -> None:
    for b in BOOKS:
        assert set(b) == {"id", "name", "author", "category", "price", "rating", "cover"}, b
        assert all(
            isinstance(b[k], str) and b[k].strip() for k in ("id", "name", "author", "category", "cover")
        )


def test_ids_are_unique_and_url_safe() -> None:
    ids = [b["id"] for b in BOOKS]
    assert len(set(ids)) == len(ids)
    for bid in ids:
        assert re.fullmatch(r"[a-z0-9][a-z0-9-]{0,39}", bid), bid


def test_names_are_unique() -> None:
    names = [b["name"] for b in BOOKS]
    assert len(set(names)) == len(names)


def test_prices_are_in_the_original_range_with_two_decimals() -> None:
    for b in BOOKS:
        price = b["price"]
        assert isinstance(price, int | float) and not isinstance(price, bool), b
        assert 15.98 <= price <= 23.95, b
        assert round(price, 2) == price, b


def test_ratings_are_integers_from_1_to_5() -> None:
    for b in BOOKS:
        assert isinstance(b["rating"], int) and not isinstance(b["rating"], bool), b
        assert 1 <= b["rating"] <= 5, b


@pytest.mark.parametrize("book", BOOKS, ids=lambda b: b["id"])
def test_cover_exists_and_is_a_well_formed_svg(book: dict[str, Any]) -> None:
    assert book["cover"] == f"covers/{book['id']}.svg"
    path = DATA / book["cover"]
    assert path.is_file(), path
    assert path.stat().st_size <= 4096
    root = ET.parse(path).getroot()
    assert root.tag == f"{SVG}svg"
    assert root.get("viewBox") == "0 0 200 300"
    # The cover shows its own book: the title element names the title and the author.
    title = root.find(f"{SVG}title")
    assert title is not None and title.text == f"{book['name']} by {book['author']}"


def test_no_stray_cover_files() -> None:
    on_disk = {p.name for p in (DATA / "covers").glob("*.svg")}
    assert on_disk == {Path(b["cover"]).name for b in BOOKS}
