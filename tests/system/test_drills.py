"""`bookstore drill` through the real CLI on isolated topologies: drills that hold, and one that must fail."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from tests.support.regions import isolated_topology, system_up

# One worker for all three: each runs a whole system, and CI has two cores.
pytestmark = [pytest.mark.system, pytest.mark.xdist_group("drills")]

EU, AP = "eu-west-1", "ap-southeast-1"


def drill(*args: str) -> tuple[int, dict[str, Any], str]:
    """Run `bookstore drill ... --json`; its exit code, its record and its stderr."""
    done = subprocess.run(
        [sys.executable, "-m", "bookstore", "drill", *args, "--json"],
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert done.stdout.strip(), f"no record printed (exit {done.returncode}): {done.stderr[-3000:]}"
    return done.returncode, json.loads(done.stdout), done.stderr


def checks_of(record: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {c["name"]: c for c in record["checks"]}


def run_fresh(tmp_path: Path, scenario: str, *more: str) -> tuple[int, dict[str, Any], str]:
    _, topology_file = isolated_topology(tmp_path / "topology.toml", edge="")
    data = tmp_path / "data"
    return drill(
        scenario,
        "--duration",
        "12",
        "--rate",
        "15",
        "--data-dir",
        str(data),
        "--topology",
        str(topology_file),
        *more,
    )


def test_a_short_region_outage_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    # Besides the shoppers, a writer posts orders straight to Ireland: they count in RPO and loss.
    code, record, stderr = run_fresh(tmp_path, "region-outage", "--write-rate", "100")
    found = checks_of(record)
    assert record["params"]["writesSent"] > 500 and record["params"]["writesAcknowledgedPerS"] > 0
    writer = next(k for k in record["kinds"] if k["kind"] == "writer")
    assert writer["failed"] > 0 and set(writer["failures"]) == {"no answer"}  # Ireland was down
    assert int(found["RPO"]["detail"].split(" of ")[1].split()[0]) > 100  # the writer's orders were looked up
    assert found["lost for good"]["value"] == 0, found["lost for good"]
    assert found["duplicate orders"]["value"] == 0, found["duplicate orders"]
    assert record["faults"][0]["name"] == "kill -9" and record["faults"][0]["endS"] is not None
    assert sum(k["requests"] for k in record["kinds"]) > 50
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]
    assert Path(record["files"]["record"]).is_file()


def test_a_short_partition_loses_and_duplicates_nothing(tmp_path: Path) -> None:
    code, record, stderr = run_fresh(tmp_path, "partition")
    found = checks_of(record)
    assert found["lost for good"]["value"] == 0, found["lost for good"]
    assert found["duplicate orders"]["value"] == 0, found["duplicate orders"]
    # Writes happened on both sides of the cut.
    assert {b["region"] for b in record["timeline"] if b["outcome"] == "ok"} >= {EU, AP}
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]


def test_a_drill_fails_when_replication_is_broken_on_purpose(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKSTORE_TEST_FAULTS", "1")
    with system_up(tmp_path, edge="") as system:
        # Neither region applies what it receives (nor repairs it by anti-entropy, which applies too).
        for region in (EU, AP):
            assert system.control("POST", f"/replication/{region}/pause")["replication"] == "paused"
        code, record, _ = drill(
            "partition", "--attach", "--duration", "8", "--rate", "15", "--settle", "3",
            "--data-dir", str(system.data_dir), "--topology", str(system.topology_file),
        )  # fmt: skip
    found = checks_of(record)
    assert code == 1 and record["passed"] is False
    assert not found["lost for good"]["held"] and found["lost for good"]["value"] > 0
    assert not found["convergence after heal"]["held"]


@pytest.mark.parametrize("scenario", ["api-break", "slow-link", "clock-skew", "blog-failover"])
def test_every_other_scenario_runs_and_says_what_held(tmp_path: Path, scenario: str) -> None:
    code, record, stderr = run_fresh(tmp_path, scenario)
    found = checks_of(record)
    assert record["scenario"] == scenario and record["faults"] and record["faults"][0]["endS"] is not None
    assert found["lost for good"]["value"] == 0 and found["duplicate orders"]["value"] == 0, found
    if scenario == "blog-failover":
        assert found["blog primary moved, old primary rejoined"]["held"], found
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]
