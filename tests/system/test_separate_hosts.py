"""Regions on separate hosts (issue 17 part 1): what is particular to them, beside the layout tests.

Each region runs `bookstore region serve` in a network namespace of its own with its own address and data
directory, the edge runs in another, the operator's commands in a fourth (`tests.support.layouts`); they
share nothing but the bridge between them and the credentials `secrets export` / `secrets import`
carried over. Replication, the edge's failover and the drills run there in `test_replication.py`,
`test_edge.py` and `test_drills.py` (their `[hosts]` variants); here: the credentials' step, the
commands that need one machine, objects both ways, and direct links on one machine.
"""

from __future__ import annotations

import json
import stat
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bookstore.objectstore.namespace import site_bucket
from bookstore.runtime.secret import parse_export
from bookstore.supervisor.launch import launched
from tests.support import waiting
from tests.support.layouts import OnHosts, on_hosts
from tests.support.regions import bookstore, isolated_topology
from tests.support.s3_replication import replicate

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
PASSWORD = "separate-hosts-password"
WAIT_S = 60.0


@pytest.fixture(scope="module")
def hosts_system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[OnHosts]:
    with on_hosts(tmp_path_factory.mktemp("hosts"), (EU, AP), (EU, AP), "", 2.0) as deployed:
        yield deployed


@pytest.fixture
def deployment(hosts_system: OnHosts) -> Iterator[OnHosts]:
    """The module's deployment, the test on the operator's host (for this test only: the last test of
    the module runs on this machine)."""
    with hosts_system.operating():
        yield hosts_system


def on(deployment: OnHosts, host: str, *args: str, check: bool = True) -> Any:
    """`bookstore ARGS` on `host` with that host's data directory (`secrets` reads no topology)."""
    topology = [] if args[0] == "secrets" else ["--topology", str(deployment.topology_file)]
    more = [*topology, "--data-dir", str(deployment.host_data(host))]
    return deployment.on.bookstore(host, *args, *more, check=check)


def s3_client(deployment: OnHosts, region_id: str) -> Any:
    held = parse_export(on(deployment, "operator", "secrets", "export").stdout)
    return boto3.client(
        "s3",
        endpoint_url=deployment.topology.region(region_id).s3_url,
        region_name=region_id,
        aws_access_key_id=held.s3.access_key_id,
        aws_secret_access_key=held.s3.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 2}),
    )


def test_export_writes_a_0600_file_and_import_refuses_other_credentials(
    deployment: OnHosts, tmp_path: Path
) -> None:
    exported = tmp_path / "credentials.json"
    exported.write_text("")
    exported.chmod(0o644)
    # `export > FILE`: the shell made FILE 0644; the command closes it to others before writing.
    deployment.on.bookstore_into(
        "eu", exported, "secrets", "export", "--data-dir", str(deployment.host_data("eu"))
    )
    assert stat.S_IMODE(exported.stat().st_mode) == 0o600
    to_file = tmp_path / "by-name.json"
    on(deployment, "eu", "secrets", "export", str(to_file))
    assert stat.S_IMODE(to_file.stat().st_mode) == 0o600
    assert parse_export(to_file.read_text()) == parse_export(exported.read_text())
    # A file others may read is imported, with a warning to delete it.
    exported.chmod(0o644)
    warned = deployment.on.bookstore(
        "operator", "secrets", "import", str(exported), "--data-dir", str(deployment.host_data("operator"))
    )
    assert "readable by others" in warned.stderr and "already holds these credentials" in warned.stdout
    # A host that made its own credentials is not silently re-keyed.
    other = tmp_path / "other"
    deployment.on.bookstore("operator", "secrets", "rotate", "--data-dir", str(other))
    refused = deployment.on.bookstore(
        "operator", "secrets", "import", str(to_file), "--data-dir", str(other), check=False
    )
    assert refused.returncode == 1 and "--replace" in refused.stderr
    for name in ("secret", "operator-token", "s3-credentials"):
        assert stat.S_IMODE((deployment.host_data("ap") / name).stat().st_mode) == 0o600


def test_commands_that_need_one_machine_say_what_they_cannot_do(deployment: OnHosts) -> None:
    up = on(deployment, "operator", "up", check=False)
    assert up.returncode == 2 and "supervised = false" in up.stderr and "region serve" in up.stderr
    for args in (("link", "cut", EU, AP), ("region", "kill", EU), ("link", "show")):
        done = on(deployment, "operator", *args, check=False)
        assert done.returncode == 2, args
        assert "no supervisor" in done.stderr and "Traceback" not in done.stderr, done.stderr
    # A region's own fault switches need no supervisor: the command asks the region itself.
    books = deployment.topology.region(AP).api_url + "/books"
    assert "api broken" in on(deployment, "operator", "api", "break", AP).stdout
    assert httpx.get(books, timeout=5).status_code == 403
    assert "api ok" in on(deployment, "operator", "api", "repair", AP).stdout
    assert httpx.get(books, timeout=5).status_code == 200
    status = on(deployment, "operator", "status", check=False)
    assert status.returncode == 0, status.stderr
    assert "no supervisor in this topology" in status.stderr and "Traceback" not in status.stderr
    # A region started where the credentials were never imported would make its own: refused.
    lone = deployment.on.bookstore(
        "operator", "region", "serve", "--region", EU, "--topology", str(deployment.topology_file),
        "--data-dir", str(deployment.root / "empty"), check=False,
    )  # fmt: skip
    assert lone.returncode == 2 and "secrets import" in lone.stderr


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


def test_objects_replicate_both_ways_across_the_hosts(deployment: OnHosts) -> None:
    # Ireland -> Singapore: the storefront `publish` put into the home bucket, by the rule it made.
    singapore = s3_client(deployment, AP)
    head = replica(singapore, site_bucket(AP), "index.html")
    assert head["ContentLength"] > 0

    # Singapore -> Ireland: a bucket pair and a rule of the user's own, made at Singapore's endpoint.
    source, destination = f"sg-{uuid.uuid4().hex[:8]}", f"ie-{uuid.uuid4().hex[:8]}"

    for bucket, region in ((source, AP), (destination, EU)):
        singapore.create_bucket(Bucket=bucket, CreateBucketConfiguration={"LocationConstraint": region})
        singapore.put_bucket_versioning(Bucket=bucket, VersioningConfiguration={"Status": "Enabled"})
    replicate(singapore, source, destination)
    version = singapore.put_object(Bucket=source, Key="notes/a.txt", Body=b"from Singapore")["VersionId"]
    ireland = s3_client(deployment, EU)
    copy = replica(ireland, destination, "notes/a.txt")
    assert copy["VersionId"] == version
    assert ireland.get_object(Bucket=destination, Key="notes/a.txt")["Body"].read() == b"from Singapore"


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
