"""Incremental anti-entropy digests: per-row hashes XORed into a fixed number of leaf buckets per table."""

from __future__ import annotations

import hashlib
import struct
from collections.abc import Sequence
from typing import cast

import orjson

from bookstore.domain.errors import ValidationError

# A key's leaf is the top LEAF_BITS of its 32-bit key hash; a digest of 2**k buckets (k <= LEAF_BITS)
# folds 2**(LEAF_BITS - k) neighbouring leaves, so every bucket count shares the one stored set of leaves.
KEY_HASH_BITS = 32
LEAF_BITS = 12
LEAVES = 1 << LEAF_BITS
LEAF_SHIFT = KEY_HASH_BITS - LEAF_BITS
_MASK = (1 << 64) - 1
# Every write hashes its row: copying a hasher made once costs less than making one with its parameters.
_BLAKE2B_64 = hashlib.blake2b(digest_size=8)
_SIGNED_64 = struct.Struct(">q").unpack


def row_hash(pk: object, sk: object, hlc: int, region: str, tombstone: bool) -> int:
    """A signed 64-bit hash of one stored row's key (canonical values), version and tombstone flag.

    Signed, because SQLite integers are: a store keeps XORs of these in INTEGER columns. The same in
    every region and process (orjson spells values deterministically).
    """
    hasher = _BLAKE2B_64.copy()
    hasher.update(orjson.dumps([pk, sk, hlc, region, bool(tombstone)]))
    return cast(int, _SIGNED_64(hasher.digest())[0])


def leaf_of(khash: int) -> int:
    """The leaf of a key hash (0 <= khash < 2**KEY_HASH_BITS)."""
    return khash >> LEAF_SHIFT


def check_buckets(buckets: int) -> int:
    """`buckets` when it is a power of two up to LEAVES (a whole number of leaves per bucket)."""
    if type(buckets) is not int or not 1 <= buckets <= LEAVES or buckets & (buckets - 1):
        raise ValidationError(f"buckets must be a power of two from 1 to {LEAVES}, got {buckets!r}")
    return buckets


def leaf_range(bucket: int, buckets: int) -> range:
    """The leaves that make up `bucket` of `buckets`."""
    check_buckets(buckets)
    if type(bucket) is not int or not 0 <= bucket < buckets:
        raise ValidationError(f"bucket must be an integer from 0 to {buckets - 1}, got {bucket!r}")
    width = LEAVES // buckets
    return range(bucket * width, (bucket + 1) * width)


def fold(leaves: Sequence[int], buckets: int) -> list[str]:
    """The digests of `buckets` buckets from the XORs of the LEAVES leaves, as 16 hex digits each."""
    check_buckets(buckets)
    if len(leaves) != LEAVES:
        raise ValueError(f"expected {LEAVES} leaves, got {len(leaves)}")
    width = LEAVES // buckets
    out: list[str] = []
    for bucket in range(buckets):
        value = 0
        for leaf in leaves[bucket * width : (bucket + 1) * width]:
            value ^= leaf
        out.append(f"{value & _MASK:016x}")
    return out
