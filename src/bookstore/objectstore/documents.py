"""S3 XML documents: parsing request bodies (defusedxml: no DTDs, no entities; bounded depth), rendering."""

from __future__ import annotations

import hashlib
import time
import xml.etree.ElementTree as ET
from collections.abc import Iterable, Mapping
from typing import Any
from urllib.parse import quote
from xml.sax.saxutils import escape

import defusedxml.ElementTree as defused
from defusedxml import DefusedXmlException

from bookstore.objectstore.configs import ReplicationConfiguration, WebsiteConfiguration
from bookstore.objectstore.errors import MalformedXML
from bookstore.objectstore.port import Bucket, ObjectVersion, Part

XMLNS = "http://s3.amazonaws.com/doc/2006-03-01/"
DECLARATION = '<?xml version="1.0" encoding="UTF-8"?>\n'
MAX_DOCUMENT = 1024 * 1024
# The one owner every bucket and object is listed with.
OWNER_ID = hashlib.sha256(b"bookstore").hexdigest()
# The deepest S3 request document (a replication rule's filter) nests 6 levels; recursion needs a bound.
MAX_DEPTH = 32

# JSON names of elements that repeat inside their parent: (parent, child) -> list name.
_REPEATED = {
    ("ReplicationConfiguration", "Rule"): "Rules",
    ("And", "Tag"): "Tags",
    ("Delete", "Object"): "Objects",
    ("CompleteMultipartUpload", "Part"): "Parts",
    ("CORSConfiguration", "CORSRule"): "CORSRules",
    ("CORSRule", "AllowedMethod"): "AllowedMethods",
    ("CORSRule", "AllowedOrigin"): "AllowedOrigins",
    ("CORSRule", "AllowedHeader"): "AllowedHeaders",
    ("CORSRule", "ExposeHeader"): "ExposeHeaders",
    ("LifecycleConfiguration", "Rule"): "Rules",
    ("Rule", "Transition"): "Transitions",
    ("Rule", "NoncurrentVersionTransition"): "NoncurrentVersionTransitions",
}
# Elements whose children are the items of a list, e.g. <TagSet><Tag/>...</TagSet> -> "TagSet": [...].
_LIST_CONTAINERS = {"TagSet", "RoutingRules"}
# Elements that are objects even when empty, e.g. <Filter/> -> "Filter": {}.
_OBJECTS = {"Filter", "And", "SourceSelectionCriteria", "Destination", "Condition", "Redirect"}
# Inverse of the above for rendering: list name -> (item element, wrapped in an element of the list name).
_RENDERED_LISTS = {
    "Rules": ("Rule", False),
    "Tags": ("Tag", False),
    "RoutingRules": ("RoutingRule", True),
    "CORSRules": ("CORSRule", False),
    "AllowedMethods": ("AllowedMethod", False),
    "AllowedOrigins": ("AllowedOrigin", False),
    "AllowedHeaders": ("AllowedHeader", False),
    "ExposeHeaders": ("ExposeHeader", False),
    "Transitions": ("Transition", False),
    "NoncurrentVersionTransitions": ("NoncurrentVersionTransition", False),
}


def parse(body: bytes, root: str) -> dict[str, Any]:
    """The XML document `body`, whose root element must be `root`, in the S3 API's JSON shape.

    Anything but a well-formed document of that root, without DTD, raises MalformedXML.
    """
    if not body.strip():
        raise MalformedXML(f"The XML you provided was empty: a {root} document is required")
    if len(body) > MAX_DOCUMENT:
        raise MalformedXML("The XML you provided is too large")
    # defusedxml refuses DTDs (so entity declarations) as the parser meets them, in any encoding: a
    # check of the raw bytes misses a UTF-16 document.
    try:
        element = defused.fromstring(body, forbid_dtd=True)
    except DefusedXmlException as exc:
        raise MalformedXML(
            "The XML you provided was not well-formed: DTDs and entity declarations are refused"
        ) from exc
    except (ET.ParseError, ValueError) as exc:
        # ValueError: expat's refusal of some declared encodings ("multi-byte encodings").
        raise MalformedXML(f"The XML you provided was not well-formed or did not validate: {exc}") from exc
    _check_depth(element)
    if _local(element.tag) != root:
        raise MalformedXML(f"The XML you provided is a {_local(element.tag)} document, not {root}")
    tree = _tree(element)
    if not isinstance(tree, dict):
        return {}
    return tree


def scalar(value: Any, name: str) -> str:
    """The text of an element that must hold text, not other elements; else MalformedXML."""
    if not isinstance(value, str):
        raise MalformedXML(f"The XML you provided has elements inside {name}, which holds text only")
    return value


def _check_depth(root: ET.Element) -> None:
    """MalformedXML when elements nest deeper than any S3 document does (the tree is walked recursively)."""
    level = [root]
    for _ in range(MAX_DEPTH):
        level = [child for element in level for child in element]
        if not level:
            return
    raise MalformedXML(f"The XML you provided nests elements more than {MAX_DEPTH} deep")


def _local(tag: str) -> str:
    return tag.rpartition("}")[2]


def _tree(element: ET.Element) -> Any:
    name = _local(element.tag)
    children = list(element)
    if name in _LIST_CONTAINERS:
        return [_tree(child) for child in children]
    if not children:
        if name in _OBJECTS and not (element.text or "").strip():
            return {}
        return element.text or ""
    out: dict[str, Any] = {}
    for child in children:
        child_name = _local(child.tag)
        listed = _REPEATED.get((name, child_name))
        if listed is not None:
            out.setdefault(listed, []).append(_tree(child))
        elif child_name in out:
            raise MalformedXML(f"The XML you provided has more than one {child_name} in {name}")
        else:
            out[child_name] = _tree(child)
    return out


def text(value: object) -> str:
    return escape(str(value))


def iso(ms: int) -> str:
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(ms // 1000)) + f".{ms % 1000:03d}Z"


def http_date(ms: int) -> str:
    return time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(ms // 1000))


def _children(value: Mapping[str, Any]) -> str:
    inner = []
    for child, item in value.items():
        rendered = _RENDERED_LISTS.get(child)
        if rendered is not None and isinstance(item, list):
            element, wrapped = rendered
            items = "".join(_element(element, i) for i in item)
            inner.append(f"<{child}>{items}</{child}>" if wrapped else items)
        else:
            inner.append(_element(child, item))
    return "".join(inner)


def _element(name: str, value: Any) -> str:
    if isinstance(value, bool):
        value = "true" if value else "false"
    if isinstance(value, Mapping):
        return f"<{name}>{_children(value)}</{name}>"
    return f"<{name}>{text(value)}</{name}>"


def document(name: str, inner: str) -> bytes:
    return f'{DECLARATION}<{name} xmlns="{XMLNS}">{inner}</{name}>'.encode()


def configuration(root: str, doc: Mapping[str, Any]) -> bytes:
    """A configuration in the S3 API's JSON shape (what `parse` returns) as the XML document `root`."""
    return document(root, _children(doc))


def replication(config: ReplicationConfiguration) -> bytes:
    return document("ReplicationConfiguration", _children(config.to_json()))


def website(config: WebsiteConfiguration) -> bytes:
    return document("WebsiteConfiguration", _children(config.to_json()))


def error(code: str, message: str, request_id: str, extra: Mapping[str, str]) -> bytes:
    fields = "".join(f"<{k}>{text(v)}</{k}>" for k, v in extra.items())
    body = (
        f"<Error><Code>{code}</Code><Message>{text(message)}</Message>{fields}"
        f"<RequestId>{request_id}</RequestId></Error>"
    )
    return (DECLARATION + body).encode()


def owner(owner_id: str) -> str:
    return f"<Owner><ID>{owner_id}</ID><DisplayName>bookstore</DisplayName></Owner>"


def list_buckets(buckets: Iterable[Bucket], owner_id: str) -> bytes:
    items = "".join(
        f"<Bucket><Name>{text(b.name)}</Name><CreationDate>{iso(b.created_ms)}</CreationDate>"
        f"<BucketRegion>{text(b.region)}</BucketRegion></Bucket>"
        for b in buckets
    )
    return document("ListAllMyBucketsResult", f"{owner(owner_id)}<Buckets>{items}</Buckets>")


def location(region: str) -> bytes:
    # us-east-1 is the one region S3 answers with an empty constraint.
    return document("LocationConstraint", "" if region == "us-east-1" else text(region))


def versioning(status: str) -> bytes:
    return document("VersioningConfiguration", f"<Status>{status}</Status>" if status else "")


def tagging(tags: Mapping[str, str]) -> bytes:
    items = "".join(f"<Tag><Key>{text(k)}</Key><Value>{text(v)}</Value></Tag>" for k, v in tags.items())
    return document("Tagging", f"<TagSet>{items}</TagSet>")


class Listing:
    """Renders listings, URL-encoding names when the client asked for encoding-type=url."""

    def __init__(self, encode: bool) -> None:
        self.encode = encode

    def name(self, value: str) -> str:
        return text(quote(value, safe="/") if self.encode else value)

    def header(self, **fields: object) -> str:
        """Elements in the given order; None values are left out, bools rendered as true/false."""
        out = []
        for name, value in fields.items():
            if value is None:
                continue
            if isinstance(value, bool):
                value = "true" if value else "false"
            out.append(f"<{name}>{value}</{name}>")
        return "".join(out)

    def contents(self, objects: Iterable[ObjectVersion], owner_id: str | None) -> str:
        owned = "" if owner_id is None else owner(owner_id)
        return "".join(
            f"<Contents><Key>{self.name(o.key)}</Key><LastModified>{iso(o.last_modified_ms)}</LastModified>"
            f'<ETag>"{o.etag}"</ETag><Size>{o.size}</Size>{owned}<StorageClass>STANDARD</StorageClass></Contents>'
            for o in objects
        )

    def prefixes(self, prefixes: Iterable[str]) -> str:
        return "".join(f"<CommonPrefixes><Prefix>{self.name(p)}</Prefix></CommonPrefixes>" for p in prefixes)

    def versions(self, versions: Iterable[ObjectVersion], owner_id: str) -> str:
        out = []
        for v in versions:
            common = (
                f"<Key>{self.name(v.key)}</Key><VersionId>{text(v.version_id)}</VersionId>"
                f"<IsLatest>{'true' if v.is_latest else 'false'}</IsLatest>"
                f"<LastModified>{iso(v.last_modified_ms)}</LastModified>"
            )
            if v.is_delete_marker:
                out.append(f"<DeleteMarker>{common}{owner(owner_id)}</DeleteMarker>")
            else:
                out.append(
                    f'<Version>{common}<ETag>"{v.etag}"</ETag><Size>{v.size}</Size>'
                    f"<StorageClass>STANDARD</StorageClass>{owner(owner_id)}</Version>"
                )
        return "".join(out)


def initiate_upload(bucket: str, key: str, upload_id: str) -> bytes:
    return document(
        "InitiateMultipartUploadResult",
        f"<Bucket>{text(bucket)}</Bucket><Key>{text(key)}</Key><UploadId>{text(upload_id)}</UploadId>",
    )


def complete_upload(location: str, bucket: str, key: str, etag: str, checksum: str = "") -> bytes:
    """CompleteMultipartUploadResult; `checksum` its rendered checksum elements, if any."""
    return document(
        "CompleteMultipartUploadResult",
        f"<Location>{text(location)}</Location><Bucket>{text(bucket)}</Bucket><Key>{text(key)}</Key>"
        f'<ETag>"{etag}"</ETag>{checksum}',
    )


def list_parts(
    bucket: str,
    key: str,
    upload_id: str,
    parts: list[Part],
    *,
    marker: int,
    max_parts: int,
    truncated: bool,
    owner_id: str,
) -> bytes:
    items = "".join(
        f"<Part><PartNumber>{p.number}</PartNumber><LastModified>{iso(p.last_modified_ms)}</LastModified>"
        f'<ETag>"{p.etag}"</ETag><Size>{p.size}</Size>{_part_checksum(p)}</Part>'
        for p in parts
    )
    next_marker = parts[-1].number if parts else marker
    return document(
        "ListPartsResult",
        f"<Bucket>{text(bucket)}</Bucket><Key>{text(key)}</Key><UploadId>{text(upload_id)}</UploadId>"
        f"<PartNumberMarker>{marker}</PartNumberMarker><NextPartNumberMarker>{next_marker}</NextPartNumberMarker>"
        f"<MaxParts>{max_parts}</MaxParts><IsTruncated>{'true' if truncated else 'false'}</IsTruncated>"
        f"{items}<Initiator><ID>{owner_id}</ID><DisplayName>bookstore</DisplayName></Initiator>"
        f"{owner(owner_id)}<StorageClass>STANDARD</StorageClass>",
    )


def copy_result(name: str, etag: str, last_modified_ms: int) -> bytes:
    return document(name, f'<ETag>"{etag}"</ETag><LastModified>{iso(last_modified_ms)}</LastModified>')


def delete_result(deleted: Iterable[Mapping[str, str]], errors: Iterable[Mapping[str, str]]) -> bytes:
    out = []
    for entry in deleted:
        out.append("<Deleted>" + "".join(f"<{k}>{text(v)}</{k}>" for k, v in entry.items()) + "</Deleted>")
    for entry in errors:
        out.append("<Error>" + "".join(f"<{k}>{text(v)}</{k}>" for k, v in entry.items()) + "</Error>")
    return document("DeleteResult", "".join(out))


def _part_checksum(part: Part) -> str:
    """A listed part's checksum element, when it has one."""
    name = part.checksum_algorithm
    return f"<Checksum{name}>{text(part.checksum)}</Checksum{name}>" if name and part.checksum else ""
