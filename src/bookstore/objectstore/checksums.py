"""The checksums S3 verifies and stores: CRC32, CRC32C, CRC64NVME, SHA1 and SHA256, whole and multipart.

A checksum is computed as a body arrives (`hasher`), compared with what the request says, and stored
with the version as base64 (`Checksum`). A multipart upload's checksum is either COMPOSITE (the
checksum of the parts' binary checksums, then "-N", as S3 does for SHA and by default for CRC32 and
CRC32C) or FULL_OBJECT (the CRC of the whole content, combined from the parts' CRCs and sizes without
reading the content again: CRC64NVME always, CRC32 and CRC32C when asked). awscrt computes the CRCs
in C (CRC32C and CRC64NVME have no fast pure-Python implementation).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Literal, Protocol

from awscrt import checksums as crt

from bookstore.objectstore.errors import BadDigest, InvalidArgument, InvalidRequest

Algorithm = Literal["CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256"]
ChecksumType = Literal["FULL_OBJECT", "COMPOSITE"]
ALGORITHMS: tuple[Algorithm, ...] = ("CRC32", "CRC32C", "CRC64NVME", "SHA1", "SHA256")
# The request and response header of each algorithm's value.
HEADERS: dict[Algorithm, str] = {a: f"x-amz-checksum-{a.lower()}" for a in ALGORITHMS}
_CANONICAL_NAMES: dict[str, Algorithm] = {a: a for a in ALGORITHMS}
# S3 computes this one for an upload that names none (as S3 does since 2025).
DEFAULT: Algorithm = "CRC64NVME"

# The reflected polynomials and widths of the CRCs, for combining two CRCs (crc_combine).
_CRCS: dict[str, tuple[Callable[[bytes, int], int], int, int]] = {
    "CRC32": (crt.crc32, 0xEDB88320, 32),
    "CRC32C": (crt.crc32c, 0x82F63B78, 32),
    "CRC64NVME": (crt.crc64nvme, 0x9A6C9329AC4BC9B5, 64),
}


@dataclass(frozen=True)
class Checksum:
    """A version's checksum: its algorithm, base64 value ("-N" after a composite one) and type."""

    algorithm: Algorithm
    value: str
    type: ChecksumType = "FULL_OBJECT"

    def to_json(self) -> dict[str, str]:
        return {"a": self.algorithm, "v": self.value, "t": self.type}

    @classmethod
    def from_json(cls, data: Mapping[str, str] | None) -> Checksum | None:
        if not data:
            return None
        return cls(
            algorithm(data["a"]), data["v"], "COMPOSITE" if data.get("t") == "COMPOSITE" else "FULL_OBJECT"
        )

    def headers(self) -> dict[str, str]:
        """The response headers of GET and HEAD with ChecksumMode=ENABLED."""
        return {HEADERS[self.algorithm]: self.value, "x-amz-checksum-type": self.type}


class Hasher(Protocol):
    def update(self, data: bytes) -> None: ...

    def digest(self) -> bytes: ...


class _Crc:
    """A CRC computed piece by piece, by awscrt."""

    def __init__(self, algorithm: str) -> None:
        self._function, _, width = _CRCS[algorithm]
        self._bytes = width // 8
        self.value = 0

    def update(self, data: bytes) -> None:
        self.value = self._function(data, self.value)

    def digest(self) -> bytes:
        return self.value.to_bytes(self._bytes, "big")


def algorithm(name: str) -> Algorithm:
    """The algorithm `name` names (any case), else InvalidRequest as S3 answers."""
    if name in _CANONICAL_NAMES:
        return _CANONICAL_NAMES[name]  # as stored: every version read names its checksum's
    upper = name.strip().upper()
    for known in ALGORITHMS:
        if known == upper:
            return known
    raise InvalidRequest(f"Checksum algorithm provided is unsupported: {name[:20]!r}")


def hasher(name: Algorithm) -> Hasher:
    if name == "SHA1":
        return hashlib.sha1(usedforsecurity=False)
    if name == "SHA256":
        return hashlib.sha256()
    return _Crc(name)


def encode(digest: bytes) -> str:
    return base64.b64encode(digest).decode()


def decode(value: str, name: Algorithm) -> bytes:
    """The binary checksum of a base64 value, checked for its length; else InvalidRequest."""
    size = {"CRC32": 4, "CRC32C": 4, "CRC64NVME": 8, "SHA1": 20, "SHA256": 32}[name]
    try:
        raw = base64.b64decode(value.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidRequest(f"Value for x-amz-checksum-{name.lower()} header is invalid.") from exc
    if len(raw) != size:
        raise InvalidRequest(f"Value for x-amz-checksum-{name.lower()} header is invalid.")
    return raw


def of(data: bytes, name: Algorithm) -> str:
    """The base64 checksum `name` of `data` (tests and small bodies)."""
    h = hasher(name)
    h.update(data)
    return encode(h.digest())


def upload_type(name: Algorithm, requested: str | None) -> ChecksumType:
    """The checksum type of a multipart upload of algorithm `name` (x-amz-checksum-type), as S3 allows."""
    wanted = (requested or "").strip().upper()
    if name == "CRC64NVME":
        if wanted not in ("", "FULL_OBJECT"):
            raise InvalidRequest(
                "The CRC64NVME checksum algorithm supports only the FULL_OBJECT checksum type"
            )
        return "FULL_OBJECT"
    if wanted in ("", "COMPOSITE"):
        return "COMPOSITE"
    if wanted == "FULL_OBJECT" and name in ("CRC32", "CRC32C"):
        return "FULL_OBJECT"
    if wanted == "FULL_OBJECT":
        raise InvalidRequest(f"The {name} checksum algorithm does not support the FULL_OBJECT checksum type")
    raise InvalidArgument(f"Value for x-amz-checksum-type header is invalid: {wanted[:20]!r}")


def multipart(name: Algorithm, kind: ChecksumType, parts: Sequence[tuple[str, int]]) -> Checksum:
    """The checksum of an upload from its parts' (base64 checksum, size), in order."""
    if kind == "COMPOSITE":
        h = hasher(name)
        for value, _ in parts:
            h.update(decode(value, name))
        return Checksum(name, f"{encode(h.digest())}-{len(parts)}", "COMPOSITE")
    _, poly, width = _CRCS[name]
    crc = 0
    for value, size in parts:
        crc = crc_combine(crc, int.from_bytes(decode(value, name), "big"), size, poly, width)
    return Checksum(name, encode(crc.to_bytes(width // 8, "big")), "FULL_OBJECT")


def named(headers: Mapping[str, str]) -> Checksum | None:
    """The checksum a request names in its x-amz-checksum-* header (CompleteMultipartUpload's, of the
    object it completes), as sent; None when it names none."""
    for name, header in HEADERS.items():
        if header in headers:
            return Checksum(name, headers[header].strip())
    return None


def check_expected(expected: Checksum | None, computed: Checksum | None) -> None:
    """BadDigest unless the checksum a client `expected` of an upload is the one `computed` from its
    parts: the same algorithm and value, a composite one with or without its "-N"."""
    if expected is None:
        return
    if computed is not None and computed.algorithm == expected.algorithm:
        bare = computed.value.rpartition("-")[0] if computed.type == "COMPOSITE" else computed.value
        if expected.value in (computed.value, bare):
            return
    raise BadDigest(f"The {expected.algorithm} you specified did not match the calculated checksum.")


def crc_combine(crc1: int, crc2: int, len2: int, poly: int, width: int) -> int:
    """The CRC of A+B from crc(A), crc(B) and len(B) (zlib's crc32_combine, for any reflected CRC)."""
    if len2 == 0:
        return crc1
    # The operator of one zero bit, then squared into two, four, eight (a byte)... zero bits.
    odd = [poly] + [1 << n for n in range(width - 1)]
    even = _square(odd)
    odd = _square(even)
    while True:
        even = _square(odd)
        if len2 & 1:
            crc1 = _times(even, crc1)
        len2 >>= 1
        if not len2:
            break
        odd = _square(even)
        if len2 & 1:
            crc1 = _times(odd, crc1)
        len2 >>= 1
        if not len2:
            break
    return crc1 ^ crc2


def _times(matrix: list[int], vector: int) -> int:
    total = 0
    i = 0
    while vector:
        if vector & 1:
            total ^= matrix[i]
        vector >>= 1
        i += 1
    return total


def _square(matrix: list[int]) -> list[int]:
    return [_times(matrix, row) for row in matrix]


def part_value(upload: tuple[Algorithm, ChecksumType] | None, given: Checksum | None) -> str:
    """The checksum a store keeps of a part: of its upload's algorithm (InvalidRequest when the part
    lacks it), else the default one when the request was given or computed it, else none ("")."""
    if upload is None:
        return given.value if given is not None and given.algorithm == DEFAULT else ""
    if given is None or given.algorithm != upload[0]:
        raise InvalidRequest(
            f"The upload was created using a {upload[0]} checksum: each part must carry its "
            f"x-amz-checksum-{upload[0].lower()}"
        )
    return given.value


def part_algorithm(upload: tuple[Algorithm, ChecksumType] | None, kept: str) -> str:
    """The algorithm of a part's kept checksum `kept` (part_value), "" when it has none."""
    if not kept:
        return ""
    return DEFAULT if upload is None else upload[0]


def completed(
    upload: tuple[Algorithm, ChecksumType] | None, parts: Sequence[tuple[str, int]]
) -> Checksum | None:
    """The checksum of a completed upload from its parts' (kept value, size): its algorithm's, or a
    FULL_OBJECT CRC64NVME when every part had the default one; else None."""
    if upload is not None:
        return multipart(upload[0], upload[1], parts)
    if parts and all(value for value, _ in parts):
        return multipart(DEFAULT, "FULL_OBJECT", parts)
    return None


def upload_to_json(upload: tuple[Algorithm, ChecksumType] | None) -> list[str] | None:
    return None if upload is None else [upload[0], upload[1]]


def upload_from_json(data: Sequence[str] | None) -> tuple[Algorithm, ChecksumType] | None:
    if not data:
        return None
    return algorithm(data[0]), "COMPOSITE" if data[1] == "COMPOSITE" else "FULL_OBJECT"


def tap(body: bytes | Iterable[bytes], name: Algorithm) -> tuple[Iterator[bytes], Callable[[], Checksum]]:
    """`body` as it is read, and the checksum `name` of what was read (call it once read to its end)."""
    h = hasher(name)

    def pieces() -> Iterator[bytes]:
        for piece in (body,) if isinstance(body, bytes) else body:
            h.update(piece)
            yield piece

    return pieces(), lambda: Checksum(name, encode(h.digest()))
