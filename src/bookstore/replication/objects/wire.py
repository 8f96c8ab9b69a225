"""The wire format between regions' S3 ports: the internal paths, the signed headers, a version's fields.

Everything a request means is in its signed target (method, path and query) and body: what travels in
headers (a forwarded request's headers, a replica's version) is bound to the target by its SHA-256 in
the query (`digest`), so nothing covered by the HMAC can be altered on the way.
"""

from __future__ import annotations

import base64
import hashlib
from collections.abc import Mapping, Sequence
from dataclasses import replace
from typing import Any

import orjson

from bookstore.objectstore.checksums import Checksum
from bookstore.objectstore.encryption import KeyProof
from bookstore.objectstore.peer import INTERNAL_PREFIX
from bookstore.objectstore.port import ObjectVersion, Part, Replica, Seal

FORWARD_PATH = f"{INTERNAL_PREFIX}forward"
OBJECTS_PATH = f"{INTERNAL_PREFIX}objects"
# Many small replicas in one signed request (encode_batch); larger ones travel alone to OBJECTS_PATH.
BATCH_PATH = f"{INTERNAL_PREFIX}objects/batch"
BUCKETS_PATH = f"{INTERNAL_PREFIX}buckets"
PING_PATH = f"{INTERNAL_PREFIX}ping"
FORWARDED_HEADERS = "x-bookstore-forwarded-headers"
VERSION_HEADER = "x-bookstore-version"
# An SSE-C key for one read (a copy source in another region), bound to the target by `sseKey`.
CUSTOMER_KEY_HEADER = "x-bookstore-sse-customer-key"


def digest(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def encode_fields(fields: Mapping[str, Any]) -> str:
    """A header-safe (ASCII) encoding of a JSON-like mapping."""
    return base64.urlsafe_b64encode(orjson.dumps(dict(fields))).decode("ascii")


def decode_fields(text: str) -> dict[str, Any]:
    value = orjson.loads(base64.urlsafe_b64decode(text.encode("ascii")))
    if not isinstance(value, dict):
        raise ValueError("not a mapping")
    return value


def version_fields(version: ObjectVersion) -> dict[str, Any]:
    """The fields of a version a replica keeps: id, times, ETag, size, type, metadata, headers, tags,
    checksum, and how the source is encrypted (the replica is encrypted with its own region's key)."""
    return {
        "bucket": version.bucket,
        "key": version.key,
        "versionId": version.version_id,
        "lastModifiedMs": version.last_modified_ms,
        "etag": version.etag,
        "size": version.size,
        "deleteMarker": version.is_delete_marker,
        "contentType": version.content_type,
        "metadata": dict(version.metadata),
        "headers": dict(version.headers),
        "tags": dict(version.tags),
        "partsCount": version.parts_count,
        "checksum": None if version.checksum is None else version.checksum.to_json(),
        "encryption": version.encryption,
    }


def parts_fields(parts: Sequence[Part]) -> list[list[str | int]]:
    """The "parts" field of a replica: [size, checksum] of each part of a multipart version, in order
    (their numbers run from 1), so that the replica answers partNumber reads as the source does."""
    return [[part.size, part.checksum] for part in parts]


def parts_from_fields(doc: Mapping[str, Any], version: ObjectVersion) -> list[Part]:
    """The parts `parts_fields` described ([] when absent: a region from before sends none); ValueError
    when malformed."""
    listed = doc.get("parts")
    if not listed:
        return []
    if not isinstance(listed, list):
        raise ValueError("not a version: parts is not a list")
    algorithm = version.checksum.algorithm if version.checksum is not None else ""
    parts = []
    for number, item in enumerate(listed, start=1):
        if not isinstance(item, list) or len(item) != 2 or type(item[0]) is not int:
            raise ValueError(f"not a version: part {number} is not [size, checksum]")
        if not isinstance(item[1], str):
            raise ValueError(f"not a version: the checksum of part {number} is not text")
        checksum = item[1]
        parts.append(Part(number, "", item[0], 0, checksum, algorithm if checksum else ""))
    return parts


def seal_fields(seal: Seal) -> dict[str, Any]:
    """The "seal" field of an SSE-C replica: the proof of its key (never the key) and its pieces' sizes."""
    return {"proof": seal.proof.to_json(), "pieces": list(seal.pieces)}


def seal_from_fields(doc: Mapping[str, Any]) -> Seal | None:
    """The seal `seal_fields` described, None when absent; ValueError when malformed."""
    sent = doc.get("seal")
    if sent is None:
        return None
    try:
        proof = KeyProof.from_json(_strings(sent["proof"]))
        pieces = sent["pieces"]
        if proof is None or not isinstance(pieces, list) or any(type(n) is not int or n < 0 for n in pieces):
            raise TypeError("expected a proof and a list of sizes")
        return Seal(proof, tuple(pieces))
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a seal: {exc}") from exc


def version_from_fields(doc: Mapping[str, Any]) -> ObjectVersion:
    """The version `version_fields` described; ValueError when a field is missing or of the wrong type."""
    try:
        parts = doc.get("partsCount")
        version = ObjectVersion(
            bucket=_str(doc["bucket"]),
            key=_str(doc["key"]),
            version_id=_str(doc["versionId"]),
            last_modified_ms=int(doc["lastModifiedMs"]),
            etag=_str(doc["etag"]),
            size=int(doc["size"]),
            is_delete_marker=bool(doc["deleteMarker"]),
            content_type=_str(doc["contentType"]),
            metadata=_strings(doc["metadata"]),
            headers=_strings(doc["headers"]),
            tags=_strings(doc["tags"]),
            parts_count=None if parts is None else int(parts),
            # Absent from an older region's answer: no checksum, encryption unknown.
            checksum=Checksum.from_json(_strings(doc.get("checksum") or {})),
            encryption=_str(doc.get("encryption", "")),
        )
    except (KeyError, TypeError) as exc:
        raise ValueError(f"not a version: {exc}") from exc
    return version


# What one batch may carry at most: its replicas, and their contents and manifest together.
BATCH_MAX_VERSIONS = 1000
BATCH_MAX_BYTES = 4 * 1024 * 1024


def replica_fields(
    version: ObjectVersion, parts: Sequence[Part] = (), seal: Seal | None = None
) -> dict[str, Any]:
    """What describes a replica on the wire, alone (PUT, its VERSION_HEADER) or in a batch (a manifest
    entry) alike: its version's fields, and a multipart version's "parts" and an SSE-C version's "seal"
    when it has them. Both are optional: a region from before ignores them, and sends none."""
    fields = version_fields(version)
    if parts:
        fields["parts"] = parts_fields(parts)
    if seal is not None:
        fields["seal"] = seal_fields(seal)
    return fields


def replica_from_fields(doc: Mapping[str, Any]) -> Replica:
    """The version, parts and seal `replica_fields` described (its body left empty); ValueError when
    malformed."""
    version = version_from_fields(doc)
    return Replica(version, b"", tuple(parts_from_fields(doc, version)), seal_from_fields(doc))


def body_size(version: ObjectVersion, seal: Seal | None) -> int:
    """How many bytes a replica's body holds on the wire: a delete marker's none, a sealed (SSE-C)
    version's its pieces as stored (each part's IV and ciphertext), any other's its size."""
    if version.is_delete_marker:
        return 0
    return version.size if seal is None else sum(seal.pieces)


# What one batch may carry at most: its replicas, and their contents and manifest together.
BATCH_MAX_VERSIONS = 1000
BATCH_MAX_BYTES = 4 * 1024 * 1024


def encode_batch(replicas: Sequence[Replica]) -> bytes:
    """A batch of replicas as one body: their fields (`replica_fields`: parts and seal included, as a
    replica sent alone has them) as a JSON list on the first line, then their contents one after the
    other (each `body_size` long: a delete marker's is empty, a sealed one's is its sealed pieces).

    Bytes rather than JSON for the contents, so that they travel as they are (no base64), and one HMAC
    over the whole body covers every version and its content.
    """
    manifest = orjson.dumps([replica_fields(r.version, r.parts, r.seal) for r in replicas])
    return b"".join([manifest, b"\n", *(r.body for r in replicas)])


def decode_batch(data: bytes) -> list[Replica]:
    """The replicas `encode_batch` sent; ValueError when the body is not such a batch."""
    manifest, newline, rest = data.partition(b"\n")
    if not newline:
        raise ValueError("no manifest line")
    docs = orjson.loads(manifest)
    if not isinstance(docs, list) or not docs or len(docs) > BATCH_MAX_VERSIONS:
        raise ValueError(f"the manifest is not a list of 1 to {BATCH_MAX_VERSIONS} versions")
    described = [replica_from_fields(d) if isinstance(d, dict) else _not_a_version(d) for d in docs]
    sizes = [body_size(r.version, r.seal) for r in described]
    if any(n < 0 for n in sizes) or sum(sizes) != len(rest):
        raise ValueError(f"the contents hold {len(rest)} bytes; the versions say {sum(sizes)}")
    out, at = [], 0
    view = memoryview(rest)
    for replica, size in zip(described, sizes, strict=True):
        out.append(replace(replica, body=bytes(view[at : at + size])))
        at += size
    return out


def encode_results(outcomes: Sequence[Mapping[str, Any]]) -> bytes:
    """A batch's answer: per replica, in order, {"status": 200} or {"status", "code", "message"}."""
    return orjson.dumps({"results": list(outcomes)})


def decode_results(data: bytes, count: int) -> list[dict[str, Any]]:
    """The per-replica results of a batch of `count`; ValueError when the answer is not that."""
    doc = orjson.loads(data)
    results = doc.get("results") if isinstance(doc, dict) else None
    if not isinstance(results, list) or len(results) != count:
        raise ValueError(f"expected {count} results")
    for result in results:
        if not isinstance(result, dict) or not isinstance(result.get("status"), int):
            raise ValueError("a result without its status")
    return results


def _not_a_version(doc: Any) -> Replica:
    raise ValueError(f"not a version: {type(doc).__name__}")


def _str(value: Any) -> str:
    if not isinstance(value, str):
        raise TypeError(f"expected text, got {type(value).__name__}")
    return value


def _strings(value: Any) -> dict[str, str]:
    if not isinstance(value, dict):
        raise TypeError("expected a mapping")
    return {_str(k): _str(v) for k, v in value.items()}
