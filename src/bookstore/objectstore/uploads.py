"""ListMultipartUploads: a bucket's uploads in progress, paged by key and upload id markers as S3 does."""

from __future__ import annotations

from starlette.responses import Response

from bookstore.objectstore import documents
from bookstore.objectstore.context import S3Context, xml
from bookstore.objectstore.errors import InvalidArgument
from bookstore.objectstore.listing import common_prefix
from bookstore.objectstore.port import StartedUpload
from bookstore.objectstore.request import Call, int_param


def _after_markers(uploads: list[StartedUpload], key_marker: str, upload_marker: str) -> list[StartedUpload]:
    """The uploads after the markers: S3 reads upload-id-marker only with a key-marker.

    With both, the listing resumes after that upload among the key's (oldest first); an upload id
    that is gone (completed, aborted) since has no place, so the key's remaining ones are all listed.
    """
    if not key_marker:
        return uploads
    later = [u for u in uploads if u.key > key_marker]
    if not upload_marker:
        return later
    same = [u for u in uploads if u.key == key_marker]
    at = next((i for i, u in enumerate(same) if u.upload_id == upload_marker), None)
    return (same if at is None else same[at + 1 :]) + later


async def list_uploads(ctx: S3Context, call: Call) -> Response:
    query = call.query
    prefix, delimiter = query.get("prefix", ""), query.get("delimiter", "")
    key_marker, upload_marker = query.get("key-marker", ""), query.get("upload-id-marker", "")
    max_uploads = int_param(query.get("max-uploads"), 1000, "max-uploads", 0, 2**31)
    encoding = query.get("encoding-type")
    if encoding not in (None, "url"):
        raise InvalidArgument("Invalid Encoding Method specified in Request")
    found = _after_markers(
        await ctx.run(ctx.store.list_uploads, call.bucket, prefix), key_marker, upload_marker
    )
    limit = min(max_uploads, 1000)
    listed: list[StartedUpload] = []
    prefixes: list[str] = []
    truncated = False
    for upload in found:
        common = common_prefix(upload.key, prefix, delimiter)
        if common is not None and (common <= key_marker or (prefixes and prefixes[-1] == common)):
            continue
        if len(listed) + len(prefixes) >= limit:
            truncated = True
            break
        if common is not None:
            prefixes.append(common)
        else:
            listed.append(upload)
    listing = documents.Listing(encode=encoding == "url")
    next_key = max([u.key for u in listed[-1:]] + prefixes[-1:], default="")
    next_upload = listed[-1].upload_id if listed and listed[-1].key == next_key else ""
    head = listing.header(
        Bucket=documents.text(call.bucket),
        KeyMarker=listing.name(key_marker),
        UploadIdMarker=documents.text(upload_marker),
        NextKeyMarker=listing.name(next_key),
        NextUploadIdMarker=documents.text(next_upload),
        Delimiter=listing.name(delimiter) if delimiter else None,
        Prefix=listing.name(prefix),
        MaxUploads=max_uploads,
        EncodingType=encoding,
        IsTruncated=truncated,
    )
    owner = documents.owner(documents.OWNER_ID)
    initiator = owner.replace("Owner>", "Initiator>")
    items = "".join(
        f"<Upload><Key>{listing.name(u.key)}</Key><UploadId>{documents.text(u.upload_id)}</UploadId>"
        f"{initiator}{owner}<StorageClass>STANDARD</StorageClass>"
        f"<Initiated>{documents.iso(u.initiated_ms)}</Initiated></Upload>"
        for u in listed
    )
    return xml(documents.document("ListMultipartUploadsResult", head + items + listing.prefixes(prefixes)))
