"""The storefront's buckets, as the seed sets them up, and `bookstore publish` of its static files.

`prepare_buckets` gives every running region a bucket of its own (bookstore-web-<region>) with
versioning and website hosting, and the home region's bucket one replication rule per other region
(empty filter), as the seed's commands do, except that delete markers replicate: a file deleted from
the storefront is gone from every region's bucket, not served on from a replica. `publish` uploads the
storefront's files into the home bucket, from where replication carries them to the other regions.
Both go through the regions' S3 APIs with boto3 and the deployment's credentials, and both are
idempotent: what is already there is left alone (no new version, nothing to replicate).
"""

from __future__ import annotations

import hashlib
import logging
import mimetypes
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from importlib import resources
from importlib.resources.abc import Traversable
from pathlib import Path
from typing import Any

import boto3
from botocore.config import Config
from botocore.exceptions import BotoCoreError, ClientError

from bookstore.config import ObjectStoreAccess, Topology
from bookstore.domain.errors import NotFound, Unavailable
from bookstore.objectstore.namespace import site_bucket

log = logging.getLogger("bookstore.objectstore.setup")

ROLE = "arn:aws:iam::000000000000:role/bookstore-s3-replication"
INDEX_DOCUMENT = "index.html"
# Until the storefront is built, the home page says what is there.
PLACEHOLDER_INDEX = b"""<!doctype html>
<html lang="en">
<head><meta charset="utf-8"><title>Bookstore</title></head>
<body>
<h1>Bookstore</h1>
<p>The storefront is not published yet. The catalog's covers are under <code>covers/</code>.</p>
</body>
</html>
"""
# The storefront's own folder in the package; its operator/ page is served by the edge, not the bucket.
STOREFRONT_PACKAGE = "bookstore"
STOREFRONT_DIR = "web"
NOT_PUBLISHED = frozenset({"operator", "__pycache__"})
IMAGE_FOLDERS = ("covers/", "flags/")
# Browsers insist on these for module scripts and stylesheets; mimetypes varies with /etc/mime.types.
CONTENT_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".mjs": "text/javascript; charset=utf-8",
    ".json": "application/json",
    ".svg": "image/svg+xml",
    ".webmanifest": "application/manifest+json",
}


def s3_client(
    topology: Topology, region_id: str, access: ObjectStoreAccess, ca_bundle: Path | None = None
) -> Any:
    """A boto3 S3 client for a region's S3 API, path-style, with the deployment's credentials.

    `ca_bundle`: with TLS between hosts, the deployment's CA certificate, the only one it trusts.
    """
    region = topology.region(region_id)
    return boto3.session.Session().client(
        "s3",
        endpoint_url=region.s3_url,
        verify=str(ca_bundle) if ca_bundle is not None else None,
        region_name=region.id,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(
            signature_version="s3v4",
            s3={"addressing_style": "path"},
            retries={"max_attempts": 5, "mode": "standard"},
            connect_timeout=5,
            read_timeout=60,
        ),
    )


def replication_rules(topology: Topology, home: str, regions: Sequence[str]) -> dict[str, Any]:
    """The home bucket's replication configuration: one rule per other region, delete markers too."""
    others = [r for r in regions if r != home]
    return {
        "Role": ROLE,
        "Rules": [
            {
                "ID": f"to-{region}",
                "Status": "Enabled",
                "Priority": priority,
                "DeleteMarkerReplication": {"Status": "Enabled"},
                "Filter": {},
                "Destination": {"Bucket": f"arn:aws:s3:::{site_bucket(region)}"},
            }
            for priority, region in enumerate(others, start=1)
        ],
    }


def prepare_buckets(
    topology: Topology, regions: Sequence[str], access: ObjectStoreAccess, ca_bundle: Path | None = None
) -> list[str]:
    """Create each region's bucket at its own endpoint (versioning, website) and the home bucket's rules
    (`ca_bundle`: see s3_client).

    Returns the bucket names. Raises Unavailable when a region's S3 API does not answer or refuses.
    """
    home = topology.home_region if topology.home_region in regions else regions[0]
    names = []
    for region_id in regions:
        name = site_bucket(region_id)
        client = s3_client(topology, region_id, access, ca_bundle)
        with _translated(f"preparing bucket {name} in {region_id}"):
            try:
                client.create_bucket(Bucket=name, CreateBucketConfiguration={"LocationConstraint": region_id})
                log.info("created bucket %s in %s", name, region_id)
            except ClientError as exc:
                if _code(exc) != "BucketAlreadyOwnedByYou":
                    raise
            if client.get_bucket_versioning(Bucket=name).get("Status") != "Enabled":
                client.put_bucket_versioning(Bucket=name, VersioningConfiguration={"Status": "Enabled"})
            try:
                website = client.get_bucket_website(Bucket=name).get("IndexDocument")
            except ClientError as exc:
                if _code(exc) != "NoSuchWebsiteConfiguration":
                    raise
                website = None
            if website != {"Suffix": INDEX_DOCUMENT}:
                client.put_bucket_website(
                    Bucket=name, WebsiteConfiguration={"IndexDocument": {"Suffix": INDEX_DOCUMENT}}
                )
        names.append(name)
    wanted = replication_rules(topology, home, regions)
    if wanted["Rules"]:
        client = s3_client(topology, home, access, ca_bundle)
        name = site_bucket(home)
        with _translated(f"configuring replication of {name}"):
            try:
                current = client.get_bucket_replication(Bucket=name)["ReplicationConfiguration"]
            except ClientError as exc:
                if _code(exc) != "ReplicationConfigurationNotFoundError":
                    raise
                current = None
            if current is None or _rules(current) != _rules(wanted):
                client.put_bucket_replication(Bucket=name, ReplicationConfiguration=wanted)
                log.info("bucket %s replicates to %s", name, ", ".join(r for r in regions if r != home))
    return names


@dataclass
class Published:
    """What `publish` did: the bucket, the keys it uploaded and the keys already up to date."""

    bucket: str
    uploaded: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)


def site_files(source: Path | None = None) -> Iterator[tuple[str, bytes]]:
    """(key, content) of the storefront's files: `source`'s files (by default the packaged storefront,
    without its operator/ page), the covers, and a placeholder index when there is none."""
    keys: set[str] = set()
    root: Traversable = source if source is not None else storefront()
    for key, entry in _files(root, ""):
        keys.add(key)
        yield key, entry.read_bytes()
    covers = resources.files("bookstore.data").joinpath("covers")
    for entry in sorted(covers.iterdir(), key=lambda e: e.name):
        key = f"covers/{entry.name}"
        if entry.name.endswith(".svg") and key not in keys:
            keys.add(key)
            yield key, entry.read_bytes()
    if INDEX_DOCUMENT not in keys:
        yield INDEX_DOCUMENT, PLACEHOLDER_INDEX


def site_keys() -> frozenset[str]:
    """The keys of the packaged storefront's own files (what `publish` uploads without --source)."""
    return frozenset(key for key, _ in site_files())


def storefront() -> Traversable:
    """The storefront's static files as packaged (src/bookstore/web)."""
    return resources.files(STOREFRONT_PACKAGE).joinpath(STOREFRONT_DIR)


def _files(folder: Traversable, prefix: str) -> Iterator[tuple[str, Traversable]]:
    if not folder.is_dir():
        return
    for entry in sorted(folder.iterdir(), key=lambda e: e.name):
        if entry.name.startswith(".") or entry.name in NOT_PUBLISHED:
            continue
        if entry.is_dir():
            yield from _files(entry, f"{prefix}{entry.name}/")
        elif entry.is_file():
            yield f"{prefix}{entry.name}", entry


def publish(
    topology: Topology, access: ObjectStoreAccess, source: Path | None = None, ca_bundle: Path | None = None
) -> Published:
    """Upload the storefront's files (site_files) into the home region's bucket; unchanged ones are skipped
    (`ca_bundle`: see s3_client).

    Raises NotFound when the home bucket does not exist (`bookstore up` creates it), Unavailable when
    the home region's S3 API does not answer.
    """
    name = site_bucket(topology.home_region)
    client = s3_client(topology, topology.home_region, access, ca_bundle)
    report = Published(name)
    with _translated(f"publishing to {name}"):
        try:
            client.head_bucket(Bucket=name)
        except ClientError as exc:
            if _code(exc) in ("404", "NoSuchBucket"):
                raise NotFound(
                    f"bucket {name} does not exist in {topology.home_region}: start the system with "
                    "`bookstore up`, which creates it"
                ) from exc
            raise
        upload_site(client, name, source, report)
    log.info("published %d file(s) to %s, %d unchanged", len(report.uploaded), name, len(report.unchanged))
    return report


def upload_site(
    client: Any, name: str, source: Path | None = None, report: Published | None = None
) -> Published:
    """The storefront's files (site_files) into bucket `name` through `client` (boto3 S3, ours or AWS's),
    skipping those whose ETag (MD5) says they are there already; the same step for a local and a
    deployed bucket."""
    report = report if report is not None else Published(name)
    current: dict[str, str] = {}
    for page in client.get_paginator("list_objects_v2").paginate(Bucket=name):
        for item in page.get("Contents", []):
            current[item["Key"]] = item["ETag"].strip('"')
    for key, content in site_files(source):
        if current.get(key) == hashlib.md5(content, usedforsecurity=False).hexdigest():
            report.unchanged.append(key)
            continue
        client.put_object(
            Bucket=name, Key=key, Body=content, ContentType=_content_type(key), CacheControl=_caching(key)
        )
        report.uploaded.append(key)
    return report


def _caching(key: str) -> str:
    """Pages, scripts and styles are revalidated on every load, so a new publish never meets a browser
    holding half of the old app; images may be kept an hour."""
    return "max-age=3600" if key.startswith(IMAGE_FOLDERS) else "no-cache"


def _content_type(key: str) -> str:
    known = CONTENT_TYPES.get(Path(key).suffix.lower())
    if known is not None:
        return known
    guessed, _ = mimetypes.guess_type(key)
    if guessed is None:
        return "application/octet-stream"
    return f"{guessed}; charset=utf-8" if guessed.startswith("text/") else guessed


def _rules(config: dict[str, Any]) -> list[tuple[Any, ...]]:
    """What matters of rules for comparing configurations (the server may add or reorder fields)."""
    return sorted(
        (
            r.get("ID"),
            r.get("Status"),
            r.get("Priority"),
            (r.get("DeleteMarkerReplication") or {}).get("Status"),
            repr(sorted((r.get("Filter") or {}).items())),
            (r.get("Destination") or {}).get("Bucket"),
        )
        for r in config.get("Rules", [])
    )


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


@contextmanager
def _translated(doing: str) -> Iterator[None]:
    """Turns boto3's errors into the project's: what failed, and the S3 error or connection problem."""
    try:
        yield
    except ClientError as exc:
        message = exc.response.get("Error", {}).get("Message", "")
        raise Unavailable(f"{doing}: {_code(exc)}: {message}") from exc
    except BotoCoreError as exc:
        raise Unavailable(f"{doing}: {exc}") from exc
