"""The parts of a multipart version on the object replication wire: optional, checked, in order; an SSE-C
version's seal; and both in a batch of replicas as a replica sent alone carries them."""

from __future__ import annotations

from dataclasses import replace
from typing import Any

import pytest

from bookstore.objectstore.checksums import Checksum
from bookstore.objectstore.encryption import KeyProof
from bookstore.objectstore.port import ObjectVersion, Part, Replica, Seal
from bookstore.replication.objects.wire import (
    decode_batch,
    decode_fields,
    encode_batch,
    encode_fields,
    parts_fields,
    parts_from_fields,
    replica_fields,
    replica_from_fields,
    seal_fields,
    seal_from_fields,
    version_fields,
    version_from_fields,
)

VERSION = ObjectVersion(
    "b",
    "k",
    "v1",
    1_700_000_000_000,
    "0" * 32 + "-2",
    7,
    parts_count=2,
    checksum=Checksum("SHA256", "x", "COMPOSITE"),
)


def test_parts_travel_with_their_sizes_and_checksums() -> None:
    parts = [Part(1, "e1", 5, 0, "c1", "SHA256"), Part(2, "e2", 2, 0, "", "")]
    doc = decode_fields(encode_fields({**version_fields(VERSION), "parts": parts_fields(parts)}))
    version = version_from_fields(doc)
    assert version == VERSION
    assert parts_from_fields(doc, version) == [Part(1, "", 5, 0, "c1", "SHA256"), Part(2, "", 2, 0, "", "")]


def test_a_region_from_before_sends_no_parts() -> None:
    doc = decode_fields(encode_fields(version_fields(VERSION)))
    assert parts_from_fields(doc, version_from_fields(doc)) == []


@pytest.mark.parametrize("parts", [{"1": 5}, [[5]], [["5", ""]], [[5, 3]], [5, 2], [[True, ""]]])
def test_malformed_parts_are_refused(parts: Any) -> None:
    doc = {**version_fields(VERSION), "parts": parts}
    with pytest.raises(ValueError):
        parts_from_fields(doc, VERSION)


def test_an_sse_c_replica_carries_its_seal_never_a_key() -> None:
    seal = Seal(KeyProof("c2FsdA==", "bWFj", "bWQ1"), (16 + 5, 16 + 2))
    doc = decode_fields(encode_fields({**version_fields(VERSION), "seal": seal_fields(seal)}))
    assert seal_from_fields(doc) == seal
    assert set(doc["seal"]["proof"]) == {"s", "h", "m"}  # salt, HMAC, MD5: what S3 stores of a key
    assert seal_from_fields(version_fields(VERSION)) is None


@pytest.mark.parametrize(
    "seal", [{"pieces": [1]}, {"proof": {}, "pieces": [1]}, {"proof": {"s": "a"}, "pieces": [1]}]
)
def test_malformed_seals_are_refused(seal: Any) -> None:
    with pytest.raises(ValueError):
        seal_from_fields({"seal": seal})


def test_a_batch_carries_each_replicas_parts_and_seal_as_one_sent_alone() -> None:
    parts = (Part(1, "", 5, 0, "c1", "SHA256"), Part(2, "", 2, 0, "c2", "SHA256"))
    seal = Seal(KeyProof("c2FsdA==", "bWFj", "bWQ1"), (16 + 5, 16 + 2))
    sealed = replace(VERSION, key="s", version_id="v2", etag="1" * 32 + "-2", encryption="SSE-C")
    marker = ObjectVersion("b", "k", "v3", 1_700_000_000_002, is_delete_marker=True)
    replicas = [
        Replica(VERSION, b"abcdefg", parts),
        # A sealed body is its pieces as stored (IVs and ciphertext): longer than the version's size.
        Replica(sealed, b"i" * 16 + b"12345" + b"j" * 16 + b"67", parts, seal),
        Replica(marker, b""),
    ]
    assert decode_batch(encode_batch(replicas)) == replicas
    # Each manifest entry is what a replica sent alone carries in its header.
    for replica in replicas:
        alone = replica_from_fields(
            decode_fields(encode_fields(replica_fields(replica.version, replica.parts, replica.seal)))
        )
        assert alone == Replica(replica.version, b"", replica.parts, replica.seal)
    # Contents that do not add up to the sealed pieces (here, to the clear size) are refused.
    short = encode_batch([Replica(sealed, b"1234567", parts, seal)])
    with pytest.raises(ValueError):
        decode_batch(short)
