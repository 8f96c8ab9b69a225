"""Tag sets as S3 checks them: object tags (x-amz-tagging, PutObjectTagging) and bucket tags."""

from __future__ import annotations

from collections.abc import Iterable
from urllib.parse import parse_qsl

from bookstore.objectstore import documents
from bookstore.objectstore.errors import InvalidTag, MalformedXML

# S3's limits: 10 tags on an object, 50 on a bucket; keys of 128 characters, values of 256.
MAX_OBJECT_TAGS = 10
MAX_BUCKET_TAGS = 50
MAX_KEY = 128
MAX_VALUE = 256


def checked(pairs: Iterable[tuple[str, str]], limit: int) -> dict[str, str]:
    """The tags of `pairs` by key; InvalidTag past S3's limits or for a key given twice."""
    tags: dict[str, str] = {}
    for key, value in pairs:
        if key in tags:
            raise InvalidTag("Cannot provide multiple Tags with the same key")
        if not key or len(key) > MAX_KEY:
            raise InvalidTag(f"The TagKey you have provided is invalid: 1 to {MAX_KEY} characters")
        if len(value) > MAX_VALUE:
            raise InvalidTag(f"The TagValue you have provided is invalid: at most {MAX_VALUE} characters")
        if key.startswith("aws:"):
            raise InvalidTag("Your TagKey cannot be prefixed with aws:")
        tags[key] = value
    if len(tags) > limit:
        kind = "Object" if limit == MAX_OBJECT_TAGS else "Bucket"
        raise InvalidTag(f"{kind} tags cannot be greater than {limit}")
    return tags


def from_header(value: str) -> dict[str, str]:
    """The tags of an x-amz-tagging header (URL-encoded key=value pairs), checked."""
    return checked(parse_qsl(value, keep_blank_values=True), MAX_OBJECT_TAGS)


def from_document(body: bytes, limit: int) -> dict[str, str]:
    """The tags of a Tagging document, checked."""
    doc = documents.parse(body, "Tagging")
    tag_set = doc.get("TagSet", [])
    if not isinstance(tag_set, list) or not all(isinstance(t, dict) and "Key" in t for t in tag_set):
        raise MalformedXML("Tagging holds a TagSet of Tag elements with Key and Value")
    return checked(
        ((documents.scalar(t["Key"], "Key"), documents.scalar(t.get("Value", ""), "Value")) for t in tag_set),
        limit,
    )
