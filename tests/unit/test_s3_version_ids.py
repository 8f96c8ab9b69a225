"""Version ids of the local object store: Crockford base-32 of (ms, counter, random), sorting as they rise."""

from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bookstore.storage.local.version_ids import _CROCKFORD, VersionIds, _decode, _encode

_VALUES = st.integers(min_value=0, max_value=(1 << 130) - 1)


def _five_bits_at_a_time(value: int) -> str:
    """The definition: 26 characters, each five bits of the value, the most significant first."""
    return "".join(_CROCKFORD[(value >> (5 * (25 - i))) & 31] for i in range(26))


@given(_VALUES)
def test_an_id_is_the_value_in_26_crockford_characters(value: int) -> None:
    assert _encode(value) == _five_bits_at_a_time(value)
    assert _decode(_encode(value)) == value


@given(_VALUES, _VALUES)
def test_ids_sort_as_their_values(a: int, b: int) -> None:
    assert (_encode(a) < _encode(b)) == (a < b)


def test_ids_rise_within_a_millisecond_and_after_one() -> None:
    ids = VersionIds()
    made = [ids.new(1_700_000_000_000) for _ in range(3)] + [ids.new(1_700_000_000_001)]
    assert made == sorted(made) and len(set(made)) == 4
    assert all(VersionIds.parse(i) == i for i in made)
    assert VersionIds.after(made[-1]) > made[-1]
