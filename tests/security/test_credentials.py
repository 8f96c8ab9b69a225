"""Issue 13, item 4: the credentials are the deployment's own, and a command rotates them.

The attack is the stolen credential: after `bookstore secrets rotate` and a restart, the old S3 key
pair, the old operator token and an old sign-in link open nothing, while the new ones work and the
regions, which share the new inter-region secret, still replicate. A rotation while the system runs is
refused (its processes hold the old values, and regions must agree on the secret).
"""

from __future__ import annotations

import re
from pathlib import Path

import boto3
import httpx
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError

from bookstore.config import ObjectStoreAccess
from bookstore.runtime.operator import control_call, operator_headers
from bookstore.runtime.secret import FILE
from bookstore.supervisor.launch import launched
from tests.support import waiting
from tests.support.regions import System, bookstore, isolated_topology

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("security-credentials")]

EU, AP = "eu-west-1", "ap-southeast-1"
EMAIL, PASSWORD = "after-rotation@example.com", "a long enough password"


def s3(system: System, access: ObjectStoreAccess) -> object:
    return boto3.client(
        "s3",
        endpoint_url=system.topology.region(EU).s3_url,
        region_name=EU,
        aws_access_key_id=access.access_key_id,
        aws_secret_access_key=access.secret_access_key,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}, retries={"max_attempts": 1}),
    )


def test_a_rotation_voids_every_old_credential_and_the_system_runs_on_the_new_ones(tmp_path: Path) -> None:
    topology, topology_file = isolated_topology(tmp_path / "topology.toml", edge="")
    data = tmp_path / "data"
    with launched(data, tmp_path / "up.log", topology_file) as process:
        system = System(topology, topology_file, data, process)
        old_access, old_token, old_secret = system.s3_access, system.token, (data / FILE).read_text()
        # The banner's one-time sign-in link works, once.
        banner = re.search(r"one-time sign-in link.*?: (\S+)", (tmp_path / "up.log").read_text())
        assert banner is not None
        login = topology.edge.url + "/edge/login"
        code = banner.group(1).split("#login=", 1)[1]
        assert httpx.post(login, json={"code": code}).status_code == 200
        assert httpx.post(login, json={"code": code}).status_code == 401
        old_link = system.cli("operator-link").stdout.strip()
        refused = system.cli("secrets", "rotate", check=False)
        assert refused.returncode == 1 and "stop it" in refused.stderr
        assert (system.s3_access, system.token) == (old_access, old_token)

    rotated = bookstore("secrets", "rotate", "--data-dir", str(data), "--topology", str(topology_file))
    assert "start the system again" in rotated.stdout

    with launched(data, tmp_path / "up-again.log", topology_file) as process:
        system = System(topology, topology_file, data, process)
        access, token = system.s3_access, system.token
        assert access.access_key_id != old_access.access_key_id and token != old_token
        assert (data / FILE).read_text() != old_secret
        # The old S3 key pair is refused; the new one works.
        with pytest.raises(ClientError) as old_keys:
            s3(system, old_access).list_objects_v2(Bucket="bookstore-web-eu-west-1")  # type: ignore[attr-defined]
        assert old_keys.value.response["Error"]["Code"] == "InvalidAccessKeyId"
        listed = s3(system, access).list_objects_v2(Bucket="bookstore-web-eu-west-1")  # type: ignore[attr-defined]
        assert listed["KeyCount"] > 0
        # The old operator token opens neither the control API nor the edge; the new one does.
        control = topology.control_url
        assert control_call(control, old_token, "GET", "/regions").status_code == 401
        assert control_call(control, token, "GET", "/regions").status_code == 200
        edge = topology.edge.url
        assert httpx.get(edge + "/edge/status", headers=operator_headers(old_token)).status_code == 401
        assert httpx.get(edge + "/edge/status", headers=operator_headers(token)).status_code == 200
        # A sign-in link made before the rotation is void.
        code = old_link.split("#login=", 1)[1]
        assert httpx.post(edge + "/edge/login", json={"code": code}).status_code == 401
        # Both regions run on the new inter-region secret: a user added in Ireland signs in in Singapore.
        system.cli("users", "add", EMAIL, "--password", PASSWORD, "--data-dir", str(data), "--region", EU)
        with system.api(AP) as singapore:
            waiting.wait_for(
                "the user replicated to Singapore",
                lambda: singapore.post("/auth/signin", json={"email": EMAIL, "password": PASSWORD}),
                lambda r: r.status_code == 200,
                30,
            )
