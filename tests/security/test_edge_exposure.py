"""Issue 13, items 4, 9 and 10: what the shop's edge serves, and to whom.

- Item 9: a region's operations (/status with its digests, /metrics, /docs, /openapi.json) are not
  served through the edge, however the path is spelled; the edge's own operator endpoints take the
  operator token. The regions' own addresses still serve them to operators.
- Item 4: the key pair written in the source opens nothing; an object in a bucket that is not one of
  the storefront's own files runs no script on the shop's origin (opened, framed or loaded as a script);
  the storefront's pages come with a strict Content-Security-Policy.
- Item 10: a file deleted from Ireland's bucket is not served on from Singapore's, whether the delete
  marker has reached Singapore yet or not.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from playwright.sync_api import Error as PlaywrightError
from playwright.sync_api import sync_playwright

from bookstore.objectstore.namespace import site_bucket
from bookstore.objectstore.setup import s3_client
from tests.browser.storefront import launch
from tests.security.conftest import require_chromium
from tests.support import waiting
from tests.support.regions import System, system_up

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("security-edge")]

EU, AP = "eu-west-1", "ap-southeast-1"
# The key pair every installation had, written in the source until this change.
WELL_KNOWN_KEY = ("AKIABOOKSTORELOCAL01", "bookstore-local-secret-key-for-the-s3-api")


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("edge-exposure"), edge="") as running:
        yield running


def edge_get(system: System, path: str) -> httpx.Response:
    return httpx.get(system.topology.edge.url + path, timeout=15)


# -- item 9 ---------------------------------------------------------------------------------------------


def test_the_regions_operations_are_not_served_through_the_shops_edge(system: System) -> None:
    for path in (
        "/api/status?digest=true",
        "/api/status",
        "/api/metrics",
        "/api/docs",
        "/api/openapi.json",
        "/api/health",
        "/api/%73tatus?digest=true",  # percent-encoded "status"
        "/api/%6Detrics",
        "/api/books/%2e%2e/status?digest=true",
    ):
        answer = edge_get(system, path)
        assert answer.status_code in (400, 404), (path, answer.status_code, answer.text[:200])
        assert "stateDigest" not in answer.text and "bookstore_" not in answer.text, path
        assert answer.json()["error"] in ("NotFound", "BadRequest"), path
    # The edge's own operator endpoints take the operator token.
    for path in ("/edge/status", "/edge/metrics", "/edge/overview"):
        assert edge_get(system, path).status_code == 401, path
    # What shoppers need goes through as before.
    for path in (
        "/api/books",
        "/api/truth",
        "/api/bestsellers",
        "/api/.well-known/jwks.json",
        "/api/search?q=bread",
    ):
        assert edge_get(system, path).status_code == 200, path
    # On a region's own address, operators still read its operations.
    with system.api(EU) as region:
        assert "stateDigest" in region.get("/status", params={"digest": "true"}).json()
        assert region.get("/metrics").status_code == 200
        assert region.get("/openapi.json").status_code == 200


# -- item 4 ---------------------------------------------------------------------------------------------


def test_the_key_pair_written_in_the_source_opens_nothing_and_aws_env_prints_the_deployments(
    system: System,
) -> None:
    old = boto3.client(
        "s3",
        endpoint_url=system.topology.region(EU).s3_url,
        region_name=EU,
        aws_access_key_id=WELL_KNOWN_KEY[0],
        aws_secret_access_key=WELL_KNOWN_KEY[1],
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )
    with pytest.raises(ClientError) as refused:
        old.put_object(Bucket=site_bucket(EU), Key="index.html", Body=b"<script>steal()</script>")
    assert refused.value.response["Error"]["Code"] == "InvalidAccessKeyId"
    assert "steal()" not in edge_get(system, "/").text
    exported = dict(re.findall(r"^export (\w+)=(\S+)$", system.cli("aws-env", EU).stdout, flags=re.MULTILINE))
    access = system.s3_access
    assert exported["AWS_ACCESS_KEY_ID"] == access.access_key_id != WELL_KNOWN_KEY[0]
    assert exported["AWS_SECRET_ACCESS_KEY"] == access.secret_access_key
    status = system.cli("status").stdout
    assert access.access_key_id in status and access.secret_access_key not in status
    assert "bookstore secrets rotate" in status


# A page, a script and an image that land in the bucket: each would use the operator's actions.
HOSTILE_HTML = """<!doctype html><title>offer</title>
<script>fetch("/api/books?pwned=inline");
fetch("/edge/control/regions/ap-southeast-1/kill",
      {method: "POST", headers: {"content-type": "application/json"}, body: "{}"});</script>
<script src="/promo/offer.js"></script>"""
HOSTILE_JS = """fetch("/api/books?pwned=script");
fetch("/edge/control/regions/ap-southeast-1/stop",
      {method: "POST", headers: {"content-type": "application/json"}, body: "{}"});"""
HOSTILE_SVG = """<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10">
<script>fetch("/api/books?pwned=svg")</script><rect width="10" height="10"/></svg>"""


@pytest.mark.browser
def test_an_object_not_of_the_storefront_runs_no_script_on_the_shops_origin(system: System) -> None:
    require_chromium()
    bucket, client = site_bucket(EU), s3_client(system.topology, EU, system.s3_access)
    for key, body, content_type in (
        ("promo/offer.html", HOSTILE_HTML, "text/html"),
        ("promo/offer.js", HOSTILE_JS, "text/javascript"),
        ("promo/offer.svg", HOSTILE_SVG, "image/svg+xml"),
    ):
        client.put_object(Bucket=bucket, Key=key, Body=body.encode(), ContentType=content_type)
    page_answer = edge_get(system, "/promo/offer.html")
    assert page_answer.headers["content-type"] == "application/octet-stream"
    assert page_answer.headers["content-disposition"] == "attachment"
    assert page_answer.headers["content-security-policy"].startswith("sandbox")
    assert edge_get(system, "/promo/offer.svg").headers["content-security-policy"].startswith("sandbox")
    # The storefront's own page: a strict policy, no inline script.
    home = edge_get(system, "/")
    assert "script-src 'self'" in home.headers["content-security-policy"]
    assert home.headers["x-content-type-options"] == "nosniff"

    before = {r["regionId"]: r["pid"] for r in system.control("GET", "/regions")["regions"]}
    edge = system.topology.edge.url
    sent: list[str] = []
    with sync_playwright() as playwright:
        browser = launch(playwright)
        try:
            context = browser.new_context()
            context.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
            page = context.new_page()
            # The image opened as a document: sandboxed, its script does not run.
            page.goto(f"{edge}/promo/offer.svg")
            # Framed and loaded as a script by a page of the shop (as injected markup would).
            page.goto(f"{edge}/")
            page.evaluate(
                """() => {
                    for (const src of ["/promo/offer.html", "/promo/offer.svg"]) {
                        const frame = document.createElement("iframe");
                        frame.src = src;
                        document.body.append(frame);
                    }
                    const script = document.createElement("script");
                    script.src = "/promo/offer.js";
                    document.body.append(script);
                }"""
            )
            waiting.wait_for(
                "the frames and the script asked for",
                lambda: [s for s in sent if "/promo/" in s],
                lambda asked: len(asked) >= 3,
                15,
            )
            page.wait_for_timeout(1500)  # what a script that ran would have sent by now
            assert any(s.endswith("/promo/offer.js") for s in sent), sent  # the script was asked for...
            assert [s for s in sent if "pwned" in s or "/edge/control/" in s] == []  # ...and did nothing
            # Opened: the page is a download, not a document of the shop's origin.
            with page.expect_download(timeout=10_000) as download:
                try:
                    page.goto(f"{edge}/promo/offer.html")
                except PlaywrightError as exc:
                    assert "Download is starting" in str(exc)
            assert download.value.suggested_filename == "offer.html"
            context.close()
        finally:
            browser.close()
    assert [s for s in sent if "pwned" in s or "/edge/control/" in s] == []
    after = {r["regionId"]: r["pid"] for r in system.control("GET", "/regions")["regions"]}
    assert after == before


# -- item 10 --------------------------------------------------------------------------------------------


def deleted_in(client: Any, bucket: str, key: str) -> bool:
    """Whether the bucket answers that the key's latest version is a delete marker."""
    try:
        client.head_object(Bucket=bucket, Key=key)
    except ClientError as exc:
        headers = exc.response["ResponseMetadata"]["HTTPHeaders"]
        return bool(exc.response["Error"]["Code"] == "404" and headers.get("x-amz-delete-marker") == "true")
    return False


def test_a_file_deleted_from_the_storefront_is_not_served_on_from_a_replica(system: System) -> None:
    access = system.s3_access
    ireland, singapore = s3_client(system.topology, EU, access), s3_client(system.topology, AP, access)
    key = "notices/closing-down-sale.txt"
    ireland.put_object(Bucket=site_bucket(EU), Key=key, Body=b"everything must go", ContentType="text/plain")
    waiting.wait_for(
        "the file replicated to Singapore",
        lambda: singapore.get_object(Bucket=site_bucket(AP), Key=key)["Body"].read(),
        lambda body: body == b"everything must go",
        30,
        (ClientError,),
    )
    assert edge_get(system, "/" + key).text == "everything must go"
    # The link is cut: the delete cannot reach Singapore, which still holds the file.
    system.cli("link", "cut", EU, AP)
    try:
        ireland.delete_object(Bucket=site_bucket(EU), Key=key)
        gone = edge_get(system, "/" + key)
        assert gone.status_code == 404, gone.text
        assert gone.headers["x-edge-origin"] == EU and "x-edge-failover" not in gone.headers
        assert singapore.get_object(Bucket=site_bucket(AP), Key=key)["Body"].read() == b"everything must go"
    finally:
        system.cli("link", "heal", EU, AP)
    # The storefront's rule replicates delete markers: Singapore's bucket has deleted the file too.
    waiting.wait_for(
        "the delete marker in Singapore", lambda: deleted_in(singapore, site_bucket(AP), key), bool, 30
    )
    # With Ireland's S3 down, the edge asks Singapore, which answers that the file was deleted.
    system.cli("s3", "break", EU)
    try:
        gone = waiting.wait_for(
            "an answer from Singapore",
            lambda: edge_get(system, "/" + key),
            lambda r: r.headers.get("x-edge-origin") == AP,
            30,
        )
        assert gone.status_code == 404
    finally:
        system.cli("s3", "repair", EU)
