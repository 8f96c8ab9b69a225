"""The wire's strict check of change entries: its fast path accepts exactly what its model accepts."""

from __future__ import annotations

from typing import Any

import pytest

from bookstore import tables
from bookstore.domain.errors import ValidationError
from bookstore.replication.tables.model import LogEntry
from bookstore.replication.tables.wire import entry_json, parse_entries

SCHEMAS = {"books": tables.BOOKS, "carts": tables.CARTS}
REGIONS = ["eu-west-1", "ap-southeast-1"]
# An entry carrying a trace context always goes the model's way (pydantic): the fast path leaves it to
# the model, so the same entry with one shows what the model makes of it.
TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"

CART = entry_json(
    LogEntry(
        seq=7,
        table="carts",
        kind="MODIFY",
        key={"customerId": "c1", "bookId": "b1"},
        old=None,
        new={"customerId": "c1", "bookId": "b1", "quantity": 2},
        written_ms=1_700_000_000_000,
        origin="eu-west-1",
        version=(5 << 16, "eu-west-1"),
        previous=(4 << 16, "ap-southeast-1"),
    )
)
BOOK = {**CART, "table": "books", "key": {"id": "x"}, "new": {"id": "x", "name": "A"}, "previous": None}

# Each a change of one field of CART (or BOOK): valid and invalid ones, close to the edges.
VARIANTS: list[tuple[str, dict[str, Any]]] = [
    ("as it is", {}),
    ("a book", BOOK),
    ("a REMOVE", {"kind": "REMOVE", "new": None}),
    ("an INSERT", {"kind": "INSERT", "previous": None}),
    ("seq 0", {"seq": 0}),
    ("negative seq", {"seq": -1}),
    ("seq as text", {"seq": "7"}),
    ("seq a bool", {"seq": True}),
    ("seq a float", {"seq": 7.0}),
    ("unknown table", {"table": "nope"}),
    ("table a list", {"table": ["carts"]}),
    ("unknown kind", {"kind": "UPSERT"}),
    ("kind a list", {"kind": ["INSERT"]}),
    ("kind a number", {"kind": 1}),
    ("REMOVE with an image", {"kind": "REMOVE"}),
    ("MODIFY without an image", {"new": None}),
    ("key a list", {"key": ["c1", "b1"]}),
    ("key short of its sort key", {"key": {"customerId": "c1"}}),
    ("key with one more attribute", {"key": {"customerId": "c1", "bookId": "b1", "x": 1}}),
    ("key with an empty value", {"key": {"customerId": "", "bookId": "b1"}}),
    ("key with a null value", {"key": {"customerId": None, "bookId": "b1"}}),
    ("key with numbers", {"key": {"customerId": 1, "bookId": 2}, "new": {"customerId": 1, "bookId": 2}}),
    ("image of another key", {"new": {"customerId": "c2", "bookId": "b1"}}),
    ("image without its key", {"new": {"quantity": 1}}),
    ("image a list", {"new": [1]}),
    ("old image", {"old": {"customerId": "c1", "bookId": "b1"}}),
    ("old a list", {"old": [1]}),
    ("written_ms negative", {"writtenMs": -1}),
    ("written_ms as text", {"writtenMs": "1"}),
    ("unknown origin", {"origin": "mars-1"}),
    ("origin a number", {"origin": 1}),
    ("origin a list", {"origin": ["eu-west-1"]}),
    ("version of an unknown region", {"version": [5, "mars-1"]}),
    ("version zero", {"version": [0, "eu-west-1"]}),
    ("version of three", {"version": [5, "eu-west-1", 1]}),
    ("version an object", {"version": {"hlc": 5}}),
    ("version's clock as text", {"version": ["5", "eu-west-1"]}),
    ("version's region a list", {"version": [5, ["eu-west-1"]]}),
    ("previous zero", {"previous": [0, "ap-southeast-1"]}),
    ("previous negative", {"previous": [-1, "ap-southeast-1"]}),
    ("previous of one", {"previous": [5]}),
    ("previous as text", {"previous": "5"}),
    ("one more field", {"extra": 1}),
]


def verdict(raw: list[Any]) -> list[LogEntry] | str:
    try:
        return parse_entries(raw, SCHEMAS, REGIONS)
    except ValidationError:
        return "refused"


@pytest.mark.parametrize(("name", "change"), VARIANTS, ids=[name for name, _ in VARIANTS])
def test_the_fast_path_and_the_model_agree_on_every_entry(name: str, change: dict[str, Any]) -> None:
    entry = {**CART, **change}
    fast = verdict([entry])
    by_model = verdict([{**entry, "trace": TRACEPARENT}])
    if isinstance(by_model, list):
        by_model = [e._replace(trace=None) for e in by_model]
    assert fast == by_model, name
    # Among valid entries, one refused entry refuses the whole batch.
    batch = verdict([CART, entry, BOOK])
    if fast == "refused":
        assert batch == "refused"
    else:
        assert batch == [*verdict([CART]), *fast, *verdict([BOOK])]


def test_a_plain_entry_comes_back_as_it_was_sent() -> None:
    (entry,) = parse_entries([CART], SCHEMAS, REGIONS)
    assert entry_json(entry) == CART
    assert entry.version == (5 << 16, "eu-west-1") and entry.previous == (4 << 16, "ap-southeast-1")


def test_entries_that_are_not_a_list_of_objects_are_refused() -> None:
    raws: list[Any] = [{"entries": []}, [1], ["x"], None]
    for raw in raws:
        with pytest.raises(ValidationError):
            parse_entries(raw, SCHEMAS, REGIONS)
