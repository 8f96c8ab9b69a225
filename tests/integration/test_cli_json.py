"""Every command that prints something takes --json and prints one JSON document, against a running system.

The servers (`up`, `region serve`, `edge serve`) print logs, not a result, and take no --json; `drill
--json` is run by tests/system/test_drills.py, `aws make-global/describe-global --json` by
tests/integration/test_global_tables.py (both need minutes or moto).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.regions import System, loopback_network, system_up

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
PASSWORD = "a long enough password"


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("cli-json"), edge="") as running:
        yield running


def as_json(system: System, *args: str) -> Any:
    """`bookstore ARGS --json` against the system: exit 0 and stdout parsed as one JSON document."""
    done = system.cli(*args, "--json", check=False)
    assert done.returncode == 0, f"bookstore {' '.join(args)}: {done.stdout}\n{done.stderr}"
    return json.loads(done.stdout)


def test_status_config_and_credentials(system: System) -> None:
    report = as_json(system, "status")
    assert {r["regionId"]: r["healthy"] for r in report["regions"] if r["active"]} == {EU: True, AP: True}
    assert report["supervisor"] is True

    settings = {s["key"]: s for s in as_json(system, "config", "show")["settings"]}
    assert settings["regions[0].address"]["source"] == "file"

    variables = as_json(system, "aws-env", AP)
    assert variables["AWS_DEFAULT_REGION"] == AP
    assert variables["AWS_ENDPOINT_URL"] == system.topology.region(AP).s3_url

    link = as_json(system, "operator-link")["url"]
    assert link.startswith(system.topology.edge.url)


def test_catalog_users_and_conflicts(system: System) -> None:
    assert as_json(system, "seed") == {"region": EU, "written": 0}
    assert as_json(system, "seed", "--region", AP)["region"] == AP
    published = as_json(system, "publish")
    assert published["bucket"] and isinstance(published["unchanged"], list)
    assert isinstance(as_json(system, "conflicts"), list)

    added = as_json(system, "users", "add", "op@example.com", "--password", PASSWORD)
    assert added["email"] == "op@example.com" and added["userId"]
    api = system.topology.region(EU).api_url
    signed_up = httpx.post(f"{api}/auth/signup", json={"email": "new@example.com", "password": PASSWORD})
    assert signed_up.status_code == 201, signed_up.text
    code = as_json(system, "users", "confirm-code", "new@example.com")
    assert code["email"] == "new@example.com" and code["code"]


def test_links_and_faults(system: System) -> None:
    links = as_json(system, "link", "show")
    assert {(lk["src"], lk["dst"]) for lk in links} >= {(EU, AP), (AP, EU)}
    changed = as_json(system, "link", "set", EU, AP, "--delay-ms", "5", "--one-way")
    assert next(lk for lk in changed if (lk["src"], lk["dst"]) == (EU, AP))["delayMs"] == 5
    assert next(lk for lk in as_json(system, "link", "cut", EU, AP) if lk["src"] == EU)["cut"] is True
    assert next(lk for lk in as_json(system, "link", "heal", EU, AP) if lk["src"] == EU)["cut"] is False

    assert as_json(system, "api", "break", AP)["api"] == "broken"
    assert as_json(system, "api", "repair", AP)["api"] == "ok"
    assert as_json(system, "s3", "break", AP)["s3"] == "unavailable"
    assert as_json(system, "s3", "repair", AP)["s3"] == "ok"


def test_the_blog_switches_over_and_back(system: System) -> None:
    assert as_json(system, "blog", "switchover", AP)["to"] == AP
    assert as_json(system, "blog", "switchover", EU)["to"] == EU
    diverged = as_json(system, "blog", "diverged")
    assert set(diverged) >= {EU, AP}


def test_region_stop_kill_and_start(system: System) -> None:
    assert as_json(system, "region", "stop", AP)["running"] is False
    # A region that does not answer makes `status` exit 1, after printing its report.
    silent = system.cli("status", "--json", check=False)
    assert silent.returncode == 1
    assert next(r for r in json.loads(silent.stdout)["regions"] if r["regionId"] == AP)["healthy"] is False
    assert f"no answer from {AP}" in silent.stderr
    assert as_json(system, "region", "start", AP)["running"] is True
    assert as_json(system, "region", "kill", AP)["running"] is False
    assert as_json(system, "region", "start", AP)["running"] is True


def test_commands_without_a_running_system(tmp_path: Path) -> None:
    """`secrets rotate` wants the system stopped, `aws plan` no system at all."""
    env = {
        **os.environ,
        # No system answers at this address: the command may rotate (a test network of this run's own).
        "BOOKSTORE_CONTROL_ADDRESS": f"127.{loopback_network()}.0.251",
        "BOOKSTORE_CONTROL_PORT": "9",
    }
    for name in ("BOOKSTORE_OPERATOR_TOKEN", "BOOKSTORE_SECRET"):
        env.pop(name, None)
    rotated = _run(env, "secrets", "rotate", "--only", "operator-token", "--data-dir", str(tmp_path))
    assert rotated["rotated"] and rotated["dataDir"] == str(tmp_path.resolve())

    planned = _run(
        env, "aws", "plan", "--domain", "example.com", "--hosted-zone-id", "Z1", "--out", str(tmp_path)
    )
    assert planned["files"]


def _run(env: dict[str, str], *args: str) -> Any:
    done = subprocess.run(
        [sys.executable, "-m", "bookstore", *args, "--json"],
        capture_output=True,
        text=True,
        env=env,
        timeout=120,
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout)
