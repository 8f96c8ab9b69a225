"""Long non-ASCII user metadata values: answered as several RFC 2047 encoded words, read back exactly."""

from __future__ import annotations

import base64
import email.header
import re
from typing import Any

import pytest

from bookstore.objectstore import encoded_words
from tests.support.s3_server import REGION, S3Server

BUCKET = "words"
# Two- three- and four-byte UTF-8 characters, so that a cut between words could fall inside one.
LONG = "Déjà vu — 書籍の題名 🐍📚 " * 12
_WORD = re.compile(r"=\?UTF-8\?B\?([A-Za-z0-9+/=]*)\?=")


def _decoded(header: str) -> str:
    """What a mail-header decoder makes of a value (the standard library's, as a client would)."""
    return str(email.header.make_header(email.header.decode_header(header)))


@pytest.mark.parametrize(
    "value",
    [LONG, "é" * 200, "🐍" * 40, "a" * 44 + "é", "x" * 3000 + "é"],
    ids=["mixed", "two-byte", "four-byte", "cut-at-45", "long-ascii-head"],
)
def test_every_word_is_at_most_75_characters_and_holds_whole_characters(value: str) -> None:
    header = encoded_words.to_header(value)
    words = header.split(" ")
    assert all(len(word) <= 75 and _WORD.fullmatch(word) for word in words)
    # Each word decodes alone (no character is cut between two words) ...
    pieces = [base64.b64decode(_WORD.fullmatch(w).group(1)).decode("utf-8") for w in words]  # type: ignore[union-attr]
    assert "".join(pieces) == value
    # ... and the whole reads back exactly, by our decoder and by the standard library's.
    assert encoded_words.decode(header) == value
    assert _decoded(header) == value


def test_a_short_value_is_still_one_word_and_ascii_is_as_is() -> None:
    assert encoded_words.to_header("Ærø") == "=?UTF-8?B?w4Zyw7g=?="
    assert encoded_words.to_header("plain ascii " * 30) == "plain ascii " * 30


def test_a_long_non_ascii_value_round_trips_exactly_with_boto3(server: S3Server) -> None:
    s3: Any = server.client()
    s3.create_bucket(Bucket=BUCKET, CreateBucketConfiguration={"LocationConstraint": REGION})
    # botocore sends metadata as ASCII only: the value goes as the encoded words a client would send.
    sent = encoded_words.to_header(LONG)
    s3.put_object(Bucket=BUCKET, Key="k", Body=b"x", Metadata={"title": sent})
    assert server.store.head_object(BUCKET, "k").metadata == {"title": LONG}
    for answer in (s3.head_object(Bucket=BUCKET, Key="k"), s3.get_object(Bucket=BUCKET, Key="k")):
        # botocore hands the header over as received (it decodes no encoded word), as from S3.
        received = answer["Metadata"]["title"]
        assert all(len(word) <= 75 for word in received.split(" ")) and len(received.split(" ")) > 1
        assert _decoded(received) == LONG
