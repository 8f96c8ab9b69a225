"""TLS between hosts (issue 17): regions on separate network namespaces speak TLS to each other and to the
edge, with certificates from `bookstore tls init|issue`; plain text, another CA and another host's
certificate are refused.

Each region runs `bookstore region serve` on a host of its own with `[tls] enabled = true`; the edge and
the operator's commands run on two more hosts that hold only the CA's certificate.
"""

from __future__ import annotations

import json
import ssl
import time
from collections.abc import Callable, Iterator
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest

from bookstore.runtime.certificates import init_ca
from bookstore.runtime.tls import CA_CERT, HOST_CERT, HOST_KEY, TLS_DIR
from tests.support import waiting
from tests.support.hosts import tail
from tests.support.layouts import AP, EU, OnHosts, on_hosts

pytestmark = pytest.mark.system

PASSWORD = "tls-hosts-password"
WAIT_S = 60.0
T = TypeVar("T")


@pytest.fixture(scope="module")
def tls_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnHosts]:
    """The separate hosts' deployment with TLS on (`on_hosts(..., tls=True)`: the CA on the operator's
    host, a certificate per region's host, the CA's certificate alone on the edge's), the edge serving."""
    with on_hosts(tmp_path_factory.mktemp("tls-hosts"), (EU, AP), (EU, AP), "", 2.0, tls=True) as d:
        with d.operating():
            edge_log = d.root / "edge" / "edge.log"
            wait(f"the edge serving from Ireland ({tail(edge_log, 5)})", partial(truth, d), EU)
        yield d


@pytest.fixture
def deployment(tls_system: OnHosts) -> Iterator[OnHosts]:
    """The module's deployment, the test on the operator's host: its requests and commands start there."""
    with tls_system.operating():
        yield tls_system


def ca(deployment: OnHosts) -> ssl.SSLContext:
    """The deployment's CA only (what the operator's host holds in its data directory); a new context."""
    return ssl.create_default_context(cafile=str(deployment.data_dir / TLS_DIR / CA_CERT))


def get(
    deployment: OnHosts, url: str, verify: ssl.SSLContext | bool | None = None, **kwargs: Any
) -> httpx.Response:
    """A GET from the operator's host, verifying with the deployment's CA unless told otherwise."""
    return httpx.get(url, timeout=5, verify=ca(deployment) if verify is None else verify, **kwargs)


def wait(what: str, probe: Callable[[], T], wanted: object, timeout: float = WAIT_S) -> T:
    return waiting.wait_for(what, probe, lambda value: value == wanted, timeout)


def status_of(deployment: OnHosts, url: str) -> int | None:
    try:
        return get(deployment, url).status_code
    except httpx.HTTPError:
        return None


def truth(deployment: OnHosts, client_region: str = EU) -> str | None:
    """The region the edge serves a shopper in `client_region` from (plain HTTP to the edge)."""
    url = deployment.topology.edge.url + "/api/truth"
    try:
        answer = get(deployment, url, verify=True, headers={"X-Client-Region": client_region})
    except httpx.HTTPError:
        return None
    return str(answer.json()["regionId"]) if answer.status_code == 200 else None


def signin(deployment: OnHosts, region_id: str, email: str) -> int:
    url = deployment.topology.region(region_id).api_url + "/auth/signin"
    answer = httpx.post(url, json={"email": email, "password": PASSWORD}, timeout=10, verify=ca(deployment))
    return answer.status_code


def test_regions_speak_tls_and_tables_replicate_both_ways(deployment: OnHosts) -> None:
    eu, ap = (deployment.topology.region(r) for r in (EU, AP))
    assert eu.api_url.startswith("https://") and ap.s3_url.startswith("https://")
    # The catalog seeded in Ireland (through the operator's TLS client) reached Singapore.
    wait("the catalog in Singapore", lambda: bool(get(deployment, ap.api_url + "/books").json()), True)
    for home, other in ((EU, AP), (AP, EU)):
        email = f"tls-from-{home}@example.com"
        deployment.cli("users", "add", email, "--password", PASSWORD, "--region", home)
        wait(f"{email} added in {home} signing in in {other}", partial(signin, deployment, other, email), 200)
    # Each region follows the other over TLS.
    for region, peer in ((eu, AP), (ap, EU)):
        status = get(deployment, region.api_url + "/status").json()
        assert status["replication"]["peers"][peer]["connected"], status["replication"]
    # The operator's `status` reads each region over TLS too.
    shown = deployment.cli("status", "--json")
    assert {r["regionId"]: r["healthy"] for r in json.loads(shown.stdout)["regions"]} == {EU: True, AP: True}


def test_a_plaintext_client_and_a_client_trusting_another_ca_are_refused(
    deployment: OnHosts, tmp_path: Path
) -> None:
    other_ca = tmp_path / "other"
    init_ca(other_ca)
    foreign = ssl.create_default_context(cafile=str(other_ca / CA_CERT))
    for region_id in (EU, AP):
        region = deployment.topology.region(region_id)
        for base in (region.api_url, region.s3_url):
            plain = base.replace("https://", "http://")
            # The listener speaks TLS only: a plain request gets no HTTP answer at all.
            with pytest.raises(httpx.HTTPError):
                get(deployment, plain + "/health")
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                get(deployment, base + "/health", verify=foreign)
            # Nor does the system's own trust store know the deployment's CA.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                get(deployment, base + "/health", verify=True)
        assert status_of(deployment, region.api_url + "/health") == 200
    # A plain-text replication follow is refused before any signature is looked at.
    with pytest.raises(httpx.HTTPError):
        httpx.post(
            deployment.topology.region(EU).api_url.replace("https://", "http://") + "/replication/follow",
            content=b"{}",
            timeout=5,
        )


def test_a_drill_attaches_over_tls_and_breaks_the_home_api_through_the_region_itself(
    deployment: OnHosts,
) -> None:
    returncode, record, stderr = deployment.drill("api-break", "--duration", "12", "--rate", "10")
    assert returncode in (0, 1), stderr
    assert record["passed"], [c for c in record["checks"] if not c["held"]]
    assert [f["name"] for f in record["faults"]] == ["API mapping removed"]


def test_the_edge_fails_over_over_tls_when_a_region_is_killed_and_returns(deployment: OnHosts) -> None:
    assert truth(deployment) == EU
    deployment.kill(EU)
    killed = time.monotonic()
    wait("the edge sending Ireland's shoppers to Singapore", partial(truth, deployment), AP, timeout=30)
    assert time.monotonic() - killed < 30
    deployment.start(EU)
    wait("the edge back on Ireland", partial(truth, deployment), EU, timeout=30)


def test_a_region_presenting_another_hosts_certificate_is_refused_by_its_clients(
    deployment: OnHosts,
) -> None:
    eu_address = deployment.topology.region(EU).address
    ap = deployment.topology.region(AP)
    ap_tls = deployment.host_data("ap") / TLS_DIR
    assert truth(deployment, AP) == AP
    kept = {name: (ap_tls / name).read_bytes() for name in (HOST_CERT, HOST_KEY)}
    deployment.kill(AP)
    # Singapore's host now holds a certificate from the right CA, but for Ireland's address.
    deployment.tls("issue", "--ip", eu_address, "--out", str(ap_tls))
    try:
        deployment.launch(AP)
        log = deployment.root / "ap" / "region.log"
        # It serves, but no client between hosts takes it for Singapore: the operator's...
        mismatch = waiting.wait_for(
            f"Singapore serving ({tail(log, 5)})",
            lambda: _refusal(deployment, ap.api_url + "/health"),
            lambda reason: reason is not None and "mismatch" in reason,
            WAIT_S,
        )
        assert "CERTIFICATE_VERIFY_FAILED" in str(mismatch)
        # ...the edge's (Singapore's shoppers go to Ireland)...
        wait("the edge refusing Singapore", partial(truth, deployment, AP), EU, timeout=30)
        # ...and Ireland's replication. Singapore itself follows Ireland (whose certificate is right): read
        # with the name check off, for this test alone, to know Singapore is up and serving its streams.
        unnamed = ca(deployment)
        unnamed.check_hostname = False
        wait(
            "Singapore following Ireland",
            lambda: peer_connected(deployment, AP, EU, unnamed),
            True,
        )
        # Ireland retries a peer at least every second: it has had its chances and never once got in.
        for _ in range(6):
            assert peer_connected(deployment, EU, AP, ca(deployment)) is False
            time.sleep(0.5)
    finally:
        for name, content in kept.items():
            (ap_tls / name).write_bytes(content)
        # Its agent presented that certificate too: the host restarts the agent, and the region with it.
        deployment.launch(AP)
        deployment.wait_healthy(AP)
    wait("the edge back on Singapore", partial(truth, deployment, AP), AP, timeout=30)


def peer_connected(deployment: OnHosts, region_id: str, peer: str, verify: ssl.SSLContext) -> bool | None:
    """Whether `region_id` follows `peer` now, by its /status; None when it does not answer."""
    url = deployment.topology.region(region_id).api_url + "/status"
    try:
        return bool(get(deployment, url, verify=verify).json()["replication"]["peers"][peer]["connected"])
    except httpx.HTTPError:
        return None


def _refusal(deployment: OnHosts, url: str) -> str | None:
    """Why a request to `url` verified with the deployment's CA failed; None when it was answered."""
    try:
        get(deployment, url)
    except httpx.HTTPError as exc:
        return str(exc)
    return None
