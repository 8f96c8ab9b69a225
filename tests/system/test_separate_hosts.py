"""Regions on separate hosts (issue 17 part 1): a network namespace per host, no supervisor, no simulator.

Each region runs `bookstore region serve` in a namespace of its own with its own address and data
directory, the edge runs in another, the operator's commands in a fourth; they share nothing but the
bridge between them and the credentials `secrets export` / `secrets import` carried over.
"""

from __future__ import annotations

import json
import stat
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, TypeVar

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bookstore.config import Topology
from bookstore.objectstore.namespace import site_bucket
from bookstore.runtime.secret import parse_export
from bookstore.supervisor.launch import launched
from tests.support import waiting
from tests.support.hosts import Hosts, separate_hosts, tail
from tests.support.prerequisites import require_netns
from tests.support.regions import bookstore, isolated_topology
from tests.support.s3_replication import replicate

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
PASSWORD = "separate-hosts-password"
WAIT_S = 60.0
T = TypeVar("T")

# The hosts and the last octet of each one's address on the bridge.
HOSTS = {"eu": 1, "ap": 2, "edge": 10, "operator": 20}
REGION_HOST = {EU: "eu", AP: "ap"}


def topology_text(hosts: Hosts) -> str:
    """Regions at their hosts' addresses, direct links, no supervisor; the edge on its own host."""
    edge = hosts.address["edge"]
    lines = [
        f'home_region = "{EU}"',
        f'active = ["{EU}", "{AP}"]',
        'links = "direct"',
        "supervised = false",
        "",
        "[edge]",
        f'address = "{edge}"',
        # Bound to every address of its host, reached at its own: as behind NAT.
        'bind_address = "0.0.0.0"',
        "port = 8080",
        f'dns_address = "{edge}"',
        "dns_port = 5353",
        "",
        "[replication]",
        "anti_entropy_s = 2.0",
        "anti_entropy_settle_s = 1.0",
        "",
    ]
    for region in Topology().regions:
        if region.id in REGION_HOST:
            lines += [
                "[[regions]]",
                f'id = "{region.id}"',
                f'name = "{region.name}"',
                f'flag = "{region.flag}"',
                f'address = "{hosts.address[REGION_HOST[region.id]]}"',
                *(['bind_address = "0.0.0.0"'] if region.id == AP else []),
                f"location = [{region.location[0]}, {region.location[1]}]",
                "",
            ]
    return "\n".join(lines)


@dataclass
class Deployment:
    """The hosts, the topology every host holds, each host's data directory and the running processes."""

    hosts: Hosts
    topology: Topology
    topology_file: Path
    root: Path
    regions: dict[str, Any]

    def data(self, host: str) -> Path:
        return self.root / host / "data"

    def cli(self, host: str, *args: str, check: bool = True) -> Any:
        """`bookstore ARGS` on `host` with this deployment's topology and that host's data directory."""
        # The `secrets` commands read no topology: only the data directory.
        topology = [] if args[0] == "secrets" else ["--topology", str(self.topology_file)]
        more = [*topology, "--data-dir", str(self.data(host))]
        return self.hosts.bookstore(host, *args, *more, check=check)

    def serve_region(self, region_id: str) -> None:
        host = REGION_HOST[region_id]
        args = ["region", "serve", "--region", region_id, "--topology", str(self.topology_file)]
        log = self.root / host / "region.log"
        self.regions[region_id] = self.hosts.start(host, [*args, "--data-dir", str(self.data(host))], log)
        url = self.topology.region(region_id).api_url
        self.wait(
            f"{region_id} healthy at {url} ({tail(log, 5)})",
            lambda: self.get(url + "/health").status_code,
            200,
        )

    def get(self, url: str, **kwargs: Any) -> httpx.Response:
        """A GET from the operator's host."""
        return self.hosts.inside("operator", lambda: httpx.get(url, timeout=5, **kwargs))

    def post(self, url: str, **kwargs: Any) -> httpx.Response:
        return self.hosts.inside("operator", lambda: httpx.post(url, timeout=10, **kwargs))

    def wait(self, what: str, probe: Callable[[], T], wanted: object, timeout: float = WAIT_S) -> T:
        return waiting.wait_for(what, probe, lambda value: value == wanted, timeout)

    def s3(self, region_id: str) -> Any:
        held = parse_export(self.cli("operator", "secrets", "export").stdout)
        return boto3.client(
            "s3",
            endpoint_url=self.topology.region(region_id).s3_url,
            region_name=region_id,
            aws_access_key_id=held.s3.access_key_id,
            aws_secret_access_key=held.s3.secret_access_key,
            config=Config(
                signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2}
            ),
        )


@pytest.fixture(scope="module")
def deployment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Deployment]:
    ip = require_netns()
    root = tmp_path_factory.mktemp("hosts")
    with separate_hosts(ip, HOSTS) as hosts:
        topology_file = root / "topology.toml"
        topology_file.write_text(topology_text(hosts), encoding="utf-8")
        d = Deployment(hosts, Topology.load(topology_file), topology_file, root, {})
        # The documented step: credentials made on one host, exported, imported on every other.
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
        edge = d.topology.edge.url
        d.wait(
            f"the edge at {edge} ({tail(edge_log, 5)})", lambda: d.get(edge + "/api/truth").status_code, 200
        )
        d.cli("operator", "seed")
        d.cli("operator", "publish")
        yield d


def test_export_writes_a_0600_file_and_import_refuses_other_credentials(
    deployment: Deployment, tmp_path: Path
) -> None:
    exported = tmp_path / "credentials.json"
    exported.write_text("")
    exported.chmod(0o644)
    # `export > FILE`: the shell made FILE 0644; the command closes it to others before writing.
    deployment.hosts.bookstore_into(
        "eu", exported, "secrets", "export", "--data-dir", str(deployment.data("eu"))
    )
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    to_file = tmp_path / "by-name.json"
    deployment.cli("eu", "secrets", "export", str(to_file))
    assert stat.S_IMODE(to_file.stat().st_mode) == 0o600
    assert parse_export(to_file.read_text()) == parse_export(exported.read_text())
    # A file others may read is imported, with a warning to delete it.
    exported.chmod(0o644)
    warned = deployment.hosts.bookstore(
        "operator", "secrets", "import", str(exported), "--data-dir", str(deployment.data("operator"))
    )
    assert "readable by others" in warned.stderr and "already holds these credentials" in warned.stdout
    # A host that made its own credentials is not silently re-keyed.
    other = tmp_path / "other"
    deployment.hosts.bookstore("operator", "secrets", "rotate", "--data-dir", str(other))
    refused = deployment.hosts.bookstore(
        "operator", "secrets", "import", str(to_file), "--data-dir", str(other), check=False
    )
    assert refused.returncode == 1 and "--replace" in refused.stderr
    for name in ("secret", "operator-token", "s3-credentials"):
        assert stat.S_IMODE((deployment.data("ap") / name).stat().st_mode) == 0o600


def test_commands_that_need_one_machine_say_what_they_cannot_do(deployment: Deployment) -> None:
    up = deployment.cli("operator", "up", check=False)
    assert up.returncode == 2 and "supervised = false" in up.stderr and "region serve" in up.stderr
    for args in (("link", "cut", EU, AP), ("region", "kill", EU), ("link", "show")):
        done = deployment.cli("operator", *args, check=False)
        assert done.returncode == 2, args
        assert "no supervisor" in done.stderr and "Traceback" not in done.stderr, done.stderr
    # A region's own fault switches need no supervisor: the command asks the region itself.
    books = deployment.topology.region(AP).api_url + "/books"
    assert "api broken" in deployment.cli("operator", "api", "break", AP).stdout
    assert deployment.get(books).status_code == 403
    assert "api ok" in deployment.cli("operator", "api", "repair", AP).stdout
    assert deployment.get(books).status_code == 200
    status = deployment.cli("operator", "status", check=False)
    assert status.returncode == 0, status.stderr
    assert "no supervisor in this topology" in status.stderr and "Traceback" not in status.stderr
    # A region started where the credentials were never imported would make its own: refused.
    lone = deployment.hosts.bookstore(
        "operator", "region", "serve", "--region", EU, "--topology", str(deployment.topology_file),
        "--data-dir", str(deployment.root / "empty"), check=False,
    )  # fmt: skip
    assert lone.returncode == 2 and "secrets import" in lone.stderr


def signin(deployment: Deployment, region_id: str, email: str) -> dict[str, str]:
    url = deployment.topology.region(region_id).api_url + "/auth/signin"
    answer = waiting.wait_for(
        f"sign-in of {email} in {region_id}",
        lambda: deployment.post(url, json={"email": email, "password": PASSWORD}),
        lambda r: r.status_code == 200,
        WAIT_S,
    )
    return {"Authorization": f"Bearer {answer.json()['accessToken']}"}


def digest(deployment: Deployment, region_id: str) -> str:
    url = deployment.topology.region(region_id).api_url + "/status"
    return str(deployment.get(url, params={"digest": "true"}).json()["stateDigest"])


def cart_rows(deployment: Deployment, url: str, auth: dict[str, str]) -> list[tuple[str, int]]:
    return [(row["bookId"], row["quantity"]) for row in deployment.get(url, headers=auth).json()]


def test_tables_replicate_both_ways_across_the_hosts(deployment: Deployment) -> None:
    # The catalog was seeded in Ireland from the operator's host and reached Singapore.
    books = deployment.topology.region(AP).api_url + "/books"
    deployment.wait("the catalog in Singapore", lambda: bool(deployment.get(books).json()), True)
    book = deployment.get(books).json()[0]["id"]
    for home, other in ((EU, AP), (AP, EU)):
        # A user added in one region signs in in the other; the cart it writes there is read back home.
        email = f"from-{home}@example.com"
        deployment.cli("operator", "users", "add", email, "--password", PASSWORD, "--region", home)
        at_home = signin(deployment, home, email)
        cart = deployment.topology.region(other).api_url + "/cart"
        placed = deployment.post(
            cart, json={"bookId": book, "quantity": 1}, headers=signin(deployment, other, email)
        )
        assert placed.status_code == 201, placed.text
        back = deployment.topology.region(home).api_url + "/cart"
        deployment.wait(
            f"the cart written in {other} read in {home}",
            partial(cart_rows, deployment, back, at_home),
            [(book, 1)],
        )
    waiting.wait_for(
        "equal state digests",
        lambda: {digest(deployment, r) for r in (EU, AP)},
        lambda d: len(d) == 1,
        WAIT_S,
    )


def replica(s3: Any, bucket: str, key: str) -> dict[str, Any]:
    """The head of `key` in `bucket` once it is there as a replica (from the operator's host)."""
    head: dict[str, Any] = waiting.wait_for(
        f"{key} replicated into {bucket}",
        lambda: s3.head_object(Bucket=bucket, Key=key),
        lambda h: h.get("ReplicationStatus") == "REPLICA",
        WAIT_S,
        tolerate=(ClientError, httpx.HTTPError),
    )
    return head


def test_objects_replicate_both_ways_across_the_hosts(deployment: Deployment) -> None:
    # Ireland -> Singapore: the storefront `publish` put into the home bucket, by the rule it made.
    singapore = deployment.s3(AP)
    head = deployment.hosts.inside("operator", lambda: replica(singapore, site_bucket(AP), "index.html"))
    assert head["ContentLength"] > 0

    # Singapore -> Ireland: a bucket pair and a rule of the user's own, made at Singapore's endpoint.
    source, destination = f"sg-{uuid.uuid4().hex[:8]}", f"ie-{uuid.uuid4().hex[:8]}"

    def put() -> str:
        for bucket, region in ((source, AP), (destination, EU)):
            singapore.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
            singapore.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
        replicate(singapore, source, destination)
        return str(
            singapore.put_object(Bucket=source, Key="notes/a.txt", Body=b"from Singapore")["VersionId"]
        )

    version = deployment.hosts.inside("operator", put)
    ireland = deployment.s3(EU)
    copy = deployment.hosts.inside("operator", lambda: replica(ireland, destination, "notes/a.txt"))
    assert copy["VersionId"] == version
    body = deployment.hosts.inside(
        "operator", lambda: ireland.get_object(Bucket=destination, Key="notes/a.txt")["Body"].read()
    )
    assert body == b"from Singapore"


def test_a_drill_attaches_to_the_hosts_and_breaks_the_home_api_through_the_region_itself(
    deployment: Deployment,
) -> None:
    done = deployment.cli(
        "operator",
        "drill",
        "api-break",
        "--attach",
        "--duration",
        "12",
        "--rate",
        "10",
        "--json",
        check=False,
    )
    assert done.returncode in (0, 1), done.stderr
    record = json.loads(done.stdout)
    failed = [c for c in record["checks"] if not c["held"]]
    assert record["passed"], failed
    assert [f["name"] for f in record["faults"]] == ["API mapping removed"]
    # A drill that needs the supervisor says so instead of failing half-way.
    refused = deployment.cli("operator", "drill", "region-outage", "--attach", check=False)
    assert refused.returncode == 2 and "needs the supervisor" in refused.stderr, refused.stderr


def truth(deployment: Deployment) -> str | None:
    try:
        answer = deployment.get(deployment.topology.edge.url + "/api/truth")
    except httpx.HTTPError:
        return None
    return str(answer.json()["regionId"]) if answer.status_code == 200 else None


def test_the_edge_fails_over_when_a_region_is_killed_and_returns_when_it_is_back(
    deployment: Deployment,
) -> None:
    assert truth(deployment) == EU
    process = deployment.regions[EU]
    process.kill()
    process.wait()
    killed = time.monotonic()
    deployment.wait(
        "the edge sending Ireland's shoppers to Singapore", lambda: truth(deployment), AP, timeout=30
    )
    assert time.monotonic() - killed < 30
    deployment.serve_region(EU)
    deployment.wait("the edge back on Ireland", lambda: truth(deployment), EU, timeout=30)


def test_up_on_one_machine_with_direct_links_replicates_and_says_a_direct_link_cannot_be_cut(
    tmp_path: Path,
) -> None:
    topology, topology_file = isolated_topology(tmp_path / "topology.toml")
    env = {"BOOKSTORE_LINKS": "direct"}
    data = tmp_path / "data"
    with launched(data, tmp_path / "up.log", topology_file, env=env):
        run = {**env, "BOOKSTORE_DATA_DIR": str(data)}
        shown = bookstore("link", "show", "--json", "--topology", str(topology_file), env=run)
        assert json.loads(shown.stdout) == []
        cut = bookstore("link", "cut", EU, AP, "--topology", str(topology_file), env=run, check=False)
        assert cut.returncode == 1 and "direct link in the topology" in cut.stderr, cut.stderr
        bookstore(
            "users", "add", "direct@example.com", "--password", PASSWORD, "--region", AP,
            "--topology", str(topology_file), env=run,
        )  # fmt: skip
        ireland = topology.region(EU).api_url + "/auth/signin"
        waiting.wait_for(
            "the user added in Singapore signing in in Ireland",
            lambda: (
                httpx.post(ireland, json={"email": "direct@example.com", "password": PASSWORD}).status_code
            ),
            lambda status: status == 200,
            WAIT_S,
        )
