"""A drill record's values as text: the numbers the report and the terminal summary show."""

from __future__ import annotations

import pytest

from bookstore.drills.text import number


@pytest.mark.parametrize(
    ("value", "unit", "shown"),
    [
        (0.84, "s", "0.84 s"),
        (184.0, "ms", "184 ms"),
        (1234.4, "ms", "1234 ms"),
        (0.00125, "s", "0.00125 s"),
        (0, "orders", "0 orders"),
        ("3 of 5", "", "3 of 5"),
        (None, "s", "—"),
    ],
)
def test_numbers_read_as_a_person_writes_them(value: float | int | str | None, unit: str, shown: str) -> None:
    assert number(value, unit) == shown
