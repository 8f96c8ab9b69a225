"""POST object: a browser's form upload, authorized by a SigV4-signed policy (generate_presigned_post).

The form (multipart/form-data) carries the key, the policy (base64 JSON: an expiration and conditions),
x-amz-algorithm, -credential, -date and -signature (the policy's HMAC by the SigV4 signing key), the
object's headers and metadata, and last the file. The request itself is unsigned: the policy is what
the owner of the key signed, and every field of the form but the file, the policy and the signature
must be allowed by one of its conditions, as S3 requires. The form is spooled as it arrives, like any
object, and parsed from the spool; a region that does not own the bucket forwards it as it is.
"""

from __future__ import annotations

import base64
import binascii
import hmac
import json
import tempfile
from collections.abc import Iterator, Mapping
from datetime import datetime
from typing import IO, Any
from urllib.parse import quote

from python_multipart.multipart import MultipartParser, parse_options_header
from starlette.concurrency import run_in_threadpool
from starlette.responses import Response

from bookstore.objectstore import acl, documents, unkept
from bookstore.objectstore import headers as rules
from bookstore.objectstore.context import S3Context
from bookstore.objectstore.errors import (
    AccessDenied,
    EntityTooLarge,
    EntityTooSmall,
    InvalidArgument,
    InvalidRequest,
    MalformedPOSTRequest,
)
from bookstore.objectstore.request import Call
from bookstore.objectstore.tags import MAX_OBJECT_TAGS, from_document

_SPOOL_BYTES = 1024 * 1024
_MAX_FIELDS = 200
_MAX_FIELD_BYTES = 64 * 1024
# Form fields no condition needs to name (S3: the policy, its signature, the file, x-ignore-*).
_UNCHECKED = frozenset(["policy", "x-amz-signature", "file"])
_INVALID = "Invalid according to Policy: "


def is_form(method: str, key: str | None, headers: Mapping[str, str]) -> bool:
    """Whether a request is a POST object: a form posted to a bucket."""
    content_type = headers.get("content-type", "").lower()
    return method == "POST" and key is None and content_type.startswith("multipart/form-data")


class Form:
    """The fields of a posted form (names lower-cased, as S3 reads them) and its file, spooled."""

    def __init__(self, staging: Any) -> None:
        self.fields: dict[str, str] = {}
        # Closed by `close`, once the file is stored (a with block cannot span parse and store).
        self.file: IO[bytes] = tempfile.SpooledTemporaryFile(_SPOOL_BYTES, dir=staging)  # noqa: SIM115
        self.file_size = 0
        self.filename = ""
        self.file_type = ""
        self.has_file = False

    def chunks(self) -> Iterator[bytes]:
        self.file.seek(0)
        while piece := self.file.read(_SPOOL_BYTES):
            yield piece

    def close(self) -> None:
        self.file.close()


def parse(call: Call, staging: Any) -> Form:
    """The form of a POST object call; MalformedPOSTRequest when it is not a well-formed one."""
    _, options = parse_options_header(call.headers.get("content-type", ""))
    boundary = options.get(b"boundary")
    if not boundary:
        raise MalformedPOSTRequest("The body of your POST request is not well-formed multipart/form-data.")
    form = Form(staging)
    state: dict[str, Any] = {"name": None, "headers": {}, "field": "", "value": bytearray(), "in_file": False}

    def on_header_field(data: bytes, start: int, end: int) -> None:
        state["field"] += data[start:end].decode("latin-1")

    def on_header_value(data: bytes, start: int, end: int) -> None:
        headers = state["headers"]
        headers[state["field"].lower()] = headers.get(state["field"].lower(), "") + data[start:end].decode(
            "latin-1"
        )

    def on_header_end() -> None:
        state["field"] = ""

    def on_headers_finished() -> None:
        _, params = parse_options_header(state["headers"].get("content-disposition", ""))
        name = params.get(b"name", b"").decode("utf-8", "replace").lower()
        state["name"] = name
        state["in_file"] = name == "file"
        if state["in_file"]:
            if form.has_file:
                raise MalformedPOSTRequest("POST requires exactly one file upload per request.")
            form.has_file = True
            form.filename = params.get(b"filename", b"").decode("utf-8", "replace")
            form.file_type = state["headers"].get("content-type", "")
        elif form.has_file:
            # S3 ignores fields after the file; the policy can only judge what came before it.
            state["name"] = None
        elif len(form.fields) >= _MAX_FIELDS:
            raise MalformedPOSTRequest("The POST request has too many form fields.")

    def on_part_data(data: bytes, start: int, end: int) -> None:
        if state["in_file"]:
            form.file.write(data[start:end])
            form.file_size += end - start
        elif state["name"] is not None:
            state["value"] += data[start:end]
            if len(state["value"]) > _MAX_FIELD_BYTES:
                raise MalformedPOSTRequest("A form field of your POST request is too large.")

    def on_part_end() -> None:
        if not state["in_file"] and state["name"] is not None:
            form.fields[state["name"]] = state["value"].decode("utf-8", "replace")
        state.update(name=None, headers={}, value=bytearray(), in_file=False)

    parser = MultipartParser(
        boundary,
        {
            "on_header_field": on_header_field,
            "on_header_value": on_header_value,
            "on_header_end": on_header_end,
            "on_headers_finished": on_headers_finished,
            "on_part_data": on_part_data,
            "on_part_end": on_part_end,
        },
    )
    try:
        for piece in _body(call):
            parser.write(piece)
        parser.finalize()
    except MalformedPOSTRequest:
        form.close()
        raise
    except Exception as exc:  # python-multipart raises its own errors (and ValueError) on a bad body
        form.close()
        raise MalformedPOSTRequest(
            "The body of your POST request is not well-formed multipart/form-data."
        ) from exc
    if not form.has_file:
        form.close()
        raise InvalidArgument("POST requires exactly one file upload per request.")
    return form


def _body(call: Call) -> Iterator[bytes]:
    if call.payload is not None:
        return call.payload.chunks()
    return iter([call.body])


def check_signature(key: bytes | None, form: Form) -> None:
    """The policy's signature by the signing key of its credential (None: unknown key)."""
    fields = form.fields
    if fields.get("x-amz-algorithm") != "AWS4-HMAC-SHA256":
        raise InvalidArgument(
            "POST requires x-amz-algorithm AWS4-HMAC-SHA256 (Signature Version 2 is refused)"
        )
    if key is None:
        raise AccessDenied("The AWS Access Key Id you provided does not exist in our records.")
    expected = hmac.new(key, fields["policy"].encode(), "sha256").hexdigest()
    if not hmac.compare_digest(expected, fields.get("x-amz-signature", "")):
        raise AccessDenied(
            "The request signature we calculated does not match the signature you provided. "
            "Check your key and signing method."
        )


def check_policy(form: Form, bucket: str, now_s: float) -> None:
    """The policy's expiration and conditions against the form; AccessDenied as S3 words it."""
    try:
        policy = json.loads(base64.b64decode(form.fields["policy"], validate=True))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidPolicyDocument("Invalid Policy: Invalid JSON.") from exc
    if not isinstance(policy, dict) or not isinstance(policy.get("conditions"), list):
        raise InvalidPolicyDocument("Invalid Policy: the policy needs an expiration and conditions.")
    expires = _expiration(policy.get("expiration"))
    if expires <= now_s:
        raise AccessDenied(_INVALID + "Policy expired.")
    values = dict(form.fields, bucket=bucket)
    covered: set[str] = set()
    low, high = 0, None
    for condition in policy["conditions"]:
        if isinstance(condition, dict) and len(condition) == 1:
            ((name, wanted),) = condition.items()
            _hold(values, "eq", name.lower(), wanted, covered)
        elif isinstance(condition, list) and len(condition) == 3 and condition[0] == "content-length-range":
            low, high = _int(condition[1]), _int(condition[2])
        elif isinstance(condition, list) and len(condition) == 3 and condition[0] in ("eq", "starts-with"):
            name = str(condition[1])
            if not name.startswith("$"):
                raise InvalidPolicyDocument(f"Invalid Policy: Invalid Condition: {condition}")
            _hold(values, str(condition[0]), name[1:].lower(), condition[2], covered)
        else:
            raise InvalidPolicyDocument(f"Invalid Policy: Invalid Simple-Condition: {condition}")
    extra = sorted(
        name
        for name in form.fields
        if name not in covered and name not in _UNCHECKED and not name.startswith("x-ignore-")
    )
    if extra:
        raise AccessDenied(_INVALID + f"Extra input fields: {extra[0]}")
    if "bucket" not in covered:
        raise AccessDenied(_INVALID + 'Policy Condition failed: ["eq", "$bucket", ""]')
    if form.file_size < low:
        raise EntityTooSmall("Your proposed upload is smaller than the minimum allowed size")
    if high is not None and form.file_size > high:
        raise EntityTooLarge("Your proposed upload exceeds the maximum allowed size")


def _hold(values: Mapping[str, str], op: str, name: str, wanted: Any, covered: set[str]) -> None:
    given = values.get(name, "")
    wanted = str(wanted)
    # S3 matches a key's ${filename} placeholder as sent, before it is replaced.
    ok = given == wanted if op == "eq" else given.startswith(wanted)
    if name == "content-type" and op == "starts-with" and "," in given:
        ok = all(part.strip().startswith(wanted) for part in given.split(","))
    if not ok:
        raise AccessDenied(_INVALID + f'Policy Condition failed: ["{op}", "${name}", "{wanted}"]')
    covered.add(name)


def _int(value: Any) -> int:
    try:
        return int(value)
    except (TypeError, ValueError) as exc:
        raise InvalidPolicyDocument("Invalid Policy: content-length-range takes two integers") from exc


def _expiration(value: Any) -> float:
    if not isinstance(value, str):
        raise InvalidPolicyDocument("Invalid Policy: Policy missing expiration.")
    try:
        return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
    except ValueError as exc:
        raise InvalidPolicyDocument(f"Invalid Policy: Invalid 'expiration' value: '{value}'") from exc


async def post_object(ctx: S3Context, call: Call) -> Response:
    """Store the form's file under its key, as the signed policy allows."""
    form = await run_in_threadpool(parse, call, ctx.staging)
    try:
        fields = form.fields
        for name in ("key", "policy", "x-amz-signature", "x-amz-credential", "x-amz-date"):
            if name not in fields:
                if name == "key":
                    raise InvalidArgument("Bucket POST must contain a field named 'key'.")
                raise AccessDenied(
                    "Bucket POST must be signed with a policy (anonymous POST is not allowed)"
                    if name in ("policy", "x-amz-signature")
                    else f"Bucket POST must contain a field named '{name}'."
                )
        signer = ctx.signer
        key = None if signer is None else signer.policy_key(fields["x-amz-credential"], fields["x-amz-date"])
        check_signature(key, form)
        check_policy(form, call.bucket, ctx.now_ms() / 1000)
        object_key = fields["key"].replace("${filename}", form.filename)
        if not object_key:
            raise InvalidArgument("User key must have a length greater than 0.")
        headers = {name: value for name, value in fields.items() if name not in ("policy", "file")}
        if "content-type" not in headers and form.file_type:
            headers["content-type"] = form.file_type
        if "acl" in headers:
            acl.check_headers({"x-amz-acl": headers["acl"]})
        unkept.refuse_lock_on_write(headers)
        write = rules.write_fields(headers, as_received=False)
        if "tagging" in fields:
            write["tags"] = from_document(fields["tagging"].encode(), MAX_OBJECT_TAGS)
        version = await run_in_threadpool(
            ctx.store.put_object, call.bucket, object_key, form.chunks(), **write
        )
    finally:
        form.close()
    return _answer(call, fields, object_key, version.etag, version.version_id)


def _answer(call: Call, fields: Mapping[str, str], key: str, etag: str, version_id: str) -> Response:
    location = f"/{quote(call.bucket)}/{quote(key)}"
    host = call.headers.get("host")
    if host:
        location = f"http://{host}{location}"
    out = {"ETag": f'"{etag}"', "Location": location}
    if version_id != "null":
        out["x-amz-version-id"] = version_id
    redirect = fields.get("success_action_redirect") or fields.get("redirect")
    if redirect:
        joiner = "&" if "?" in redirect else "?"
        quoted_etag = quote(f'"{etag}"')
        target = f"{redirect}{joiner}bucket={quote(call.bucket)}&key={quote(key)}&etag={quoted_etag}"
        return Response(status_code=303, headers={**out, "Location": target})
    status = fields.get("success_action_status", "204")
    if status == "201":
        body = documents.document(
            "PostResponse",
            f"<Location>{documents.text(location)}</Location><Bucket>{documents.text(call.bucket)}</Bucket>"
            f'<Key>{documents.text(key)}</Key><ETag>"{etag}"</ETag>',
        )
        return Response(body, status_code=201, headers=out, media_type="application/xml")
    return Response(status_code=200 if status == "200" else 204, headers=out)


class InvalidPolicyDocument(InvalidRequest):
    """A POST policy that is not one (S3 answers 400 InvalidPolicyDocument)."""

    code = "InvalidPolicyDocument"
