"""TLS between hosts (issue 17): regions on separate network namespaces speak TLS to each other and to the
edge, with certificates from `bookstore tls init|issue`; plain text, another CA and another host's
certificate are refused.

Each region runs `bookstore region serve` on a host of its own with `[tls] enabled = true`; the edge and
the operator's commands run on two more hosts that hold only the CA's certificate.
"""

from __future__ import annotations

import json
import shutil
import ssl
import time
from collections.abc import Iterator
from functools import partial
from pathlib import Path
from typing import Any

import httpx
import pytest

from bookstore.config import Topology
from bookstore.runtime.certificates import init_ca
from bookstore.runtime.tls import CA_CERT, HOST_CERT, HOST_KEY, TLS_DIR
from tests.support import waiting
from tests.support.hosts import Hosts, separate_hosts, tail
from tests.support.prerequisites import require_netns
from tests.system.test_separate_hosts import AP, EU, HOSTS, REGION_HOST, WAIT_S
from tests.system.test_separate_hosts import Deployment as HostsDeployment
from tests.system.test_separate_hosts import topology_text as plain_topology_text

pytestmark = pytest.mark.system

PASSWORD = "tls-hosts-password"


def topology_text(hosts: Hosts) -> str:
    """The separate hosts' topology (direct links, no supervisor, the edge on its own host), TLS on."""
    return plain_topology_text(hosts) + "\n[tls]\nenabled = true\n"


class Deployment(HostsDeployment):
    """The separate hosts' deployment; the operator's requests verify the regions with the deployment's CA."""

    @property
    def ca(self) -> ssl.SSLContext:
        """The deployment's CA only (what the operator's host holds in its data directory)."""
        return ssl.create_default_context(cafile=str(self.data("operator") / TLS_DIR / CA_CERT))

    def get(self, url: str, verify: ssl.SSLContext | bool | None = None, **kwargs: Any) -> httpx.Response:
        """A GET from the operator's host, verifying with the deployment's CA unless told otherwise."""
        check = self.ca if verify is None else verify
        return self.hosts.inside("operator", lambda: httpx.get(url, timeout=5, verify=check, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.hosts.inside("operator", lambda: httpx.post(url, timeout=10, verify=self.ca, **kwargs))

    def tls(self, *args: str) -> None:
        """`bookstore tls ARGS` on the operator's host (where the CA is kept)."""
        self.hosts.bookstore("operator", "tls", *args, "--data-dir", str(self.data("operator")))

    def stop_region(self, region_id: str) -> None:
        process = self.regions.pop(region_id)
        process.kill()
        process.wait()

    def start_region(self, region_id: str) -> Path:
        """`region serve` on the region's host without waiting for it; returns its log."""
        host = REGION_HOST[region_id]
        args = ["region", "serve", "--region", region_id, "--topology", str(self.topology_file)]
        log = self.root / host / "region.log"
        self.regions[region_id] = self.hosts.start(host, [*args, "--data-dir", str(self.data(host))], log)
        return log

    def status_of(self, url: str, **kwargs: Any) -> int | None:
        try:
            return self.get(url, **kwargs).status_code
        except httpx.HTTPError:
            return None

    def truth(self, client_region: str = EU) -> str | None:
        """The region the edge serves a shopper in `client_region` from (plain HTTP to the edge)."""
        url = self.topology.edge.url + "/api/truth"
        try:
            answer = self.get(url, verify=True, headers={"X-Client-Region": client_region})
        except httpx.HTTPError:
            return None
        return str(answer.json()["regionId"]) if answer.status_code == 200 else None


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    ip = require_netns()
    root = tmp_path_factory.mktemp("tls-hosts")
    with separate_hosts(ip, HOSTS) as hosts:
        topology_file = root / "topology.toml"
        topology_file.write_text(topology_text(hosts), encoding="utf-8")
        d = Deployment(hosts, Topology.load(topology_file), topology_file, root, {})
        # The documented steps: the CA on the operator's machine, a certificate per region host, the CA's
        # certificate alone for the hosts that only connect (edge, operator); the credentials carried over.
        d.tls("init")
        for region_id, host in REGION_HOST.items():
            d.tls("issue", "--ip", d.topology.region(region_id).address, "--out", str(d.data(host) / TLS_DIR))
        (d.data("edge") / TLS_DIR).mkdir(parents=True)
        shutil.copy(d.data("operator") / TLS_DIR / CA_CERT, d.data("edge") / TLS_DIR / CA_CERT)
        exported = root / "credentials.json"
        hosts.bookstore_into("eu", exported, "secrets", "export", "--data-dir", str(d.data("eu")))
        for host in ("ap", "edge", "operator"):
            d.cli(host, "secrets", "import", str(exported))
        for region_id in (EU, AP):
            d.serve_region(region_id)
        edge_log = root / "edge" / "edge.log"
        hosts.start(
            "edge",
            ["edge", "serve", "--topology", str(topology_file), "--data-dir", str(d.data("edge"))],
            edge_log,
        )
        d.wait(f"the edge serving from Ireland ({tail(edge_log, 5)})", d.truth, EU)
        d.cli("operator", "seed")
        d.cli("operator", "publish")
        yield d


def signin(deployment: Deployment, region_id: str, email: str) -> int:
    url = deployment.topology.region(region_id).api_url + "/auth/signin"
    return deployment.post(url, json={"email": email, "password": PASSWORD}).status_code


def test_regions_speak_tls_and_tables_replicate_both_ways(deployment: Deployment) -> None:
    eu, ap = (deployment.topology.region(r) for r in (EU, AP))
    assert eu.api_url.startswith("https://") and ap.s3_url.startswith("https://")
    # The catalog seeded in Ireland (through the operator's TLS client) reached Singapore.
    deployment.wait(
        "the catalog in Singapore", lambda: bool(deployment.get(ap.api_url + "/books").json()), True
    )
    for home, other in ((EU, AP), (AP, EU)):
        email = f"tls-from-{home}@example.com"
        deployment.cli("operator", "users", "add", email, "--password", PASSWORD, "--region", home)
        deployment.wait(
            f"{email} added in {home} signing in in {other}", partial(signin, deployment, other, email), 200
        )
    # Each region follows the other over TLS.
    for region, peer in ((eu, AP), (ap, EU)):
        status = deployment.get(region.api_url + "/status").json()
        assert status["replication"]["peers"][peer]["connected"], status["replication"]
    # The operator's `status` reads each region over TLS too.
    shown = deployment.cli("operator", "status", "--json")
    assert {r["regionId"]: r["healthy"] for r in json.loads(shown.stdout)["regions"]} == {EU: True, AP: True}


def test_a_plaintext_client_and_a_client_trusting_another_ca_are_refused(
    deployment: Deployment, tmp_path: Path
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
                deployment.get(plain + "/health")
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                deployment.get(base + "/health", verify=foreign)
            # Nor does the system's own trust store know the deployment's CA.
            with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                deployment.get(base + "/health", verify=True)
        assert deployment.status_of(region.api_url + "/health") == 200
    # A plain-text replication follow is refused before any signature is looked at.
    with pytest.raises(httpx.HTTPError):
        deployment.hosts.inside(
            "operator",
            lambda: httpx.post(
                deployment.topology.region(EU).api_url.replace("https://", "http://") + "/replication/follow",
                content=b"{}",
                timeout=5,
            ),
        )


def test_a_drill_attaches_over_tls_and_breaks_the_home_api_through_the_region_itself(
    deployment: Deployment,
) -> None:
    args = ("drill", "api-break", "--attach", "--duration", "12", "--rate", "10", "--json")
    done = deployment.cli("operator", *args, check=False)
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    assert record["passed"], [c for c in record["checks"] if not c["held"]]
    assert [f["name"] for f in record["faults"]] == ["API mapping removed"]


def test_the_edge_fails_over_over_tls_when_a_region_is_killed_and_returns(deployment: Deployment) -> None:
    assert deployment.truth() == EU
    deployment.stop_region(EU)
    killed = time.monotonic()
    deployment.wait("the edge sending Ireland's shoppers to Singapore", deployment.truth, AP, timeout=30)
    assert time.monotonic() - killed < 30
    deployment.serve_region(EU)
    deployment.wait("the edge back on Ireland", deployment.truth, EU, timeout=30)


def test_a_region_presenting_another_hosts_certificate_is_refused_by_its_clients(
    deployment: Deployment,
) -> None:
    eu_address = deployment.topology.region(EU).address
    ap = deployment.topology.region(AP)
    assert deployment.truth(AP) == AP
    kept = {name: (deployment.data("ap") / TLS_DIR / name).read_bytes() for name in (HOST_CERT, HOST_KEY)}
    deployment.stop_region(AP)
    # Singapore's host now holds a certificate from the right CA, but for Ireland's address.
    deployment.tls("issue", "--ip", eu_address, "--out", str(deployment.data("ap") / TLS_DIR))
    try:
        log = deployment.start_region(AP)
        # It serves, but no client between hosts takes it for Singapore: the operator's...
        mismatch = waiting.wait_for(
            f"Singapore serving ({tail(log, 5)})",
            lambda: _refusal(deployment, ap.api_url + "/health"),
            lambda reason: reason is not None and "mismatch" in reason,
            WAIT_S,
        )
        assert "CERTIFICATE_VERIFY_FAILED" in str(mismatch)
        # ...the edge's (Singapore's shoppers go to Ireland)...
        deployment.wait("the edge refusing Singapore", lambda: deployment.truth(AP), EU, timeout=30)
        # ...and Ireland's replication. Singapore itself follows Ireland (whose certificate is right): read
        # with the name check off, for this test alone, to know Singapore is up and serving its streams.
        unnamed = deployment.ca
        unnamed.check_hostname = False
        deployment.wait(
            "Singapore following Ireland",
            lambda: peer_connected(deployment, AP, EU, unnamed),
            True,
        )
        # Ireland retries a peer at least every second: it has had its chances and never once got in.
        for _ in range(6):
            assert peer_connected(deployment, EU, AP, deployment.ca) is False
            time.sleep(0.5)
    finally:
        deployment.stop_region(AP)
        for name, content in kept.items():
            (deployment.data("ap") / TLS_DIR / name).write_bytes(content)
        deployment.serve_region(AP)
    deployment.wait("the edge back on Singapore", lambda: deployment.truth(AP), AP, timeout=30)


def peer_connected(deployment: Deployment, region_id: str, peer: str, verify: ssl.SSLContext) -> bool | None:
    """Whether `region_id` follows `peer` now, by its /status; None when it does not answer."""
    url = deployment.topology.region(region_id).api_url + "/status"
    try:
        return bool(deployment.get(url, verify=verify).json()["replication"]["peers"][peer]["connected"])
    except httpx.HTTPError:
        return None


def _refusal(deployment: Deployment, url: str) -> str | None:
    """Why a request to `url` verified with the deployment's CA failed; None when it was answered."""
    try:
        deployment.get(url)
    except httpx.HTTPError as exc:
        return str(exc)
    return None
