"""User metadata values and RFC 2047 encoded words: decoded before they are stored, encoded when answered.

S3 documents it so (User Guide, "Working with object metadata"): non-US-ASCII metadata values "are
character decoded as per RFC 2047 before storing and encoded as per RFC 2047 to make them mail-safe
before returning"; a value of US-ASCII only is returned as is. HTTP header values are bytes: a client
sends UTF-8 (most SDKs) or encoded words (`=?UTF-8?B?...?=`, what botocore lets through), and either
way the store keeps the text, so its 2 KB limit counts the text's UTF-8 bytes, and a replica in another
region (whose wire is JSON) holds the same text.
"""

from __future__ import annotations

import base64
import binascii
import re

_PREFIX = "=?UTF-8?B?"
# RFC 2047 (section 2) caps an encoded word at 75 characters: 12 of them are `=?UTF-8?B?` and `?=`, and
# the 63 left hold 60 base64 characters, 45 bytes of UTF-8.
_WORD_BYTES = 45
# An encoded word: =?charset?B|Q?text?= (an RFC 2231 language after `*` in the charset is allowed).
_WORD = re.compile(r"=\?([^?\s*]+)(?:\*[^?\s]*)?\?([bBqQ])\?([^?\s]*)\?=")
# What is sent as is: printable US-ASCII and tab, as S3 returns a value of US-ASCII only.
_AS_IS = re.compile(r"[\t\x20-\x7e]*")


def from_header(raw: str) -> str:
    """The text of a received x-amz-meta-* value.

    The HTTP server hands over header bytes as Latin-1 text, one character a byte: they are read as
    UTF-8 when they are UTF-8 (else kept as received), then any encoded words in them are decoded.
    """
    try:
        text = raw.encode("latin-1").decode("utf-8")
    except (UnicodeEncodeError, UnicodeDecodeError):
        text = raw
    return decode(text)


def decode(value: str) -> str:
    """`value` with its RFC 2047 encoded words decoded; a word that does not decode is kept as written."""
    if "=?" not in value:
        return value
    out: list[str] = []
    end, joined = 0, False
    for match in _WORD.finditer(value):
        gap = value[end : match.start()]
        word = _decoded_word(match)
        # Whitespace alone between two encoded words is dropped (RFC 2047, section 6.2).
        if not (joined and word is not None and not gap.strip(" \t")):
            out.append(gap)
        out.append(match.group(0) if word is None else word)
        end, joined = match.end(), word is not None
    out.append(value[end:])
    return "".join(out)


def to_header(value: str) -> str:
    """The header value that carries stored `value`: itself when printable US-ASCII, else its UTF-8 as
    encoded words (`=?UTF-8?B?...?=`, which boto3 and the aws CLI hand over as received, as S3's).

    A word holds at most 75 characters (RFC 2047), so a long value is several words separated by a space,
    as S3 answers it; each holds whole characters, so each decodes alone, and a decoder drops the space
    between words (RFC 2047, section 6.2), which gives the value back exactly.
    """
    if _AS_IS.fullmatch(value):
        return value
    return " ".join(f"{_PREFIX}{base64.b64encode(piece).decode('ascii')}?=" for piece in _pieces(value))


def _pieces(value: str) -> list[bytes]:
    """The UTF-8 of `value` cut between characters into pieces of at most _WORD_BYTES bytes."""
    pieces: list[bytes] = []
    current = bytearray()
    for char in value:
        data = char.encode("utf-8", "surrogatepass")
        if len(current) + len(data) > _WORD_BYTES:
            pieces.append(bytes(current))
            current.clear()
        current += data
    pieces.append(bytes(current))
    return pieces


def _decoded_word(match: re.Match[str]) -> str | None:
    charset, kind, text = match.group(1), match.group(2).upper(), match.group(3)
    try:
        if kind == "B":
            data = base64.b64decode(text + "=" * (-len(text) % 4), validate=True)
        else:
            data = binascii.a2b_qp(text.encode("ascii"), header=True)
        return data.decode(charset)
    except (ValueError, LookupError, UnicodeError):
        # binascii.Error and UnicodeDecodeError are ValueErrors; an unknown charset is a LookupError.
        return None
