"""SigV4's canonical forms: the shortcuts for text with nothing to encode or trim change no answer."""

from __future__ import annotations

import re
from urllib.parse import quote, unquote

from hypothesis import example, given
from hypothesis import strategies as st

from bookstore.objectstore.sigv4 import _CANONICAL, _PLAIN_PATH, _trimmed, canonical_query

query_text = st.text(alphabet=st.sampled_from("aZ09-_.~%2F+= /\u00e9&*"), max_size=12)


def _by_the_book(raw_query: str, skip: str | None = None) -> str:
    """The canonical query as SigV4 defines it: each name and value decoded, then encoded, pairs sorted."""
    pairs = []
    for part in filter(None, raw_query.split("&")):
        name, _, value = part.partition("=")
        name = quote(unquote(name), safe="-_.~")
        if name != skip:
            pairs.append((name, quote(unquote(value), safe="-_.~")))
    return "&".join(f"{n}={v}" for n, v in sorted(pairs))


@given(st.lists(st.tuples(query_text, query_text), max_size=6))
@example([("X-Amz-Credential", "AKIA%2F20261207%2Feu-west-1%2Fs3%2Faws4_request"), ("a b", "%7e")])
def test_the_canonical_query_is_sigv4s(pairs: list[tuple[str, str]]) -> None:
    raw = "&".join(f"{n}={v}" for n, v in pairs)
    assert canonical_query(raw) == _by_the_book(raw)
    assert canonical_query(raw, skip="X-Amz-Signature") == _by_the_book(raw, skip="X-Amz-Signature")


@given(st.text(alphabet=st.sampled_from("ab \t\r\n\f\v\u00a0\u0085"), max_size=10))
@example("  a  b ")
def test_a_header_value_is_trimmed_as_sigv4_says(value: str) -> None:
    assert _trimmed(value) == re.sub(r"[ \t\r\n\f\v]+", " ", value).strip(" ")


@given(st.text(alphabet=st.sampled_from("aZ09-_.~/%2F+ \u00e9*"), max_size=16))
@example("/bucket/put-1")
def test_a_plain_path_is_its_own_standard_encoding(path: str) -> None:
    # SigV4 tries the standard encoding of the decoded path second; a plain path skips computing it.
    if _PLAIN_PATH.fullmatch(path):
        assert quote(unquote(path), safe="/~") == path


@given(
    st.text(alphabet=st.sampled_from("aZ09-_.~%+= /\u00e9*"), max_size=12)
    | st.binary(max_size=4).map(lambda b: "".join(f"%{c:02X}" for c in b))
)
@example("AKIA%2F20261207%2Feu-west-1%2Fs3%2Faws4_request")
@example("%41%7E%2f")
def test_a_query_part_taken_as_its_own_encoding_is(text: str) -> None:
    if _CANONICAL.fullmatch(text):
        assert quote(unquote(text), safe="-_.~") == text


def test_every_escaped_byte_taken_as_its_own_encoding_is_and_credentials_are() -> None:
    taken = [f"%{b:02X}" for b in range(256) if _CANONICAL.fullmatch(f"%{b:02X}")]
    assert all(quote(unquote(text), safe="-_.~") == text for text in taken)
    assert "%2F" in taken and "%41" not in taken and "%C3" not in taken
