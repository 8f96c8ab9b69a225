"""`bookstore drill` through the real CLI on isolated topologies: drills that hold, and one that must fail.

On one machine a drill starts its own system (`bookstore up`); on separate hosts it attaches (`--attach`)
to the regions (each under its host's agent) and edge on their hosts, from the operator's: every drill
runs there (slow-link with the regions' slow switches, where no link simulator has a delay).
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest

from bookstore.config import DEFAULT_DELAYS_MS
from tests.support.layouts import ONE_MACHINE, Layout
from tests.support.regions import isolated_topology

# One worker for all three: each runs a whole system, and CI has two cores.
pytestmark = [pytest.mark.system, pytest.mark.xdist_group("drills")]

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"
KINDS = ("browse", "cart", "checkout", "blog", "static")


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


def run_fresh(
    layout: Layout, tmp_path: Path, scenario: str, *more: str, regions: int = 2
) -> tuple[int, dict[str, Any], str]:
    """A drill on a fresh system; the topology knows three regions, two of them active (`--regions` 3
    starts the third). On separate hosts the drill attaches to a system deployed for it."""
    if layout.name != ONE_MACHINE:
        active = (EU, AP, US)[:regions]
        with layout.up(tmp_path, regions=(EU, AP, US), active=active, edge="") as system:
            return system.drill(scenario, "--duration", "12", "--rate", "15", *more)
    _, topology_file = isolated_topology(
        tmp_path / "topology.toml", regions=(EU, AP, US), active=(EU, AP), edge=""
    )
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
        *(("--regions", str(regions)) if regions != 2 else ()),
        *more,
    )


def assert_strict(record: dict[str, Any]) -> None:
    """What every drill now reports: each kind's RTO on its own, every region read, orders per attempt."""
    found = checks_of(record)
    for kind in KINDS:
        assert f"RTO of {kind}" in found, sorted(found)
        assert any(k["kind"] == kind and "rtoS" in k for k in record["kinds"]), record["kinds"]
    regions = [r["id"] for r in record["regions"]]
    for region in regions:
        assert f"{region} " in found["lost for good"]["detail"], found["lost for good"]
    assert record["params"]["checkoutsWithoutKey"] > 0
    assert "checkouts without a key" in found["duplicate orders"]["detail"]


def test_a_short_region_outage_loses_and_duplicates_nothing(layout: Layout, tmp_path: Path) -> None:
    # Besides the shoppers, a writer posts orders straight to Ireland: they count in RPO and loss.
    code, record, stderr = run_fresh(layout, tmp_path, "region-outage", "--write-rate", "100")
    found = checks_of(record)
    assert record["params"]["writesSent"] > 500 and record["params"]["writesAcknowledgedPerS"] > 0
    writer = next(k for k in record["kinds"] if k["kind"] == "writer")
    assert writer["failed"] > 0 and set(writer["failures"]) == {"no answer"}  # Ireland was down
    assert int(found["RPO"]["detail"].split(" of ")[1].split()[0]) > 100  # the writer's orders were looked up
    assert found["lost for good"]["value"] == 0, found["lost for good"]
    assert found["duplicate orders"]["value"] == 0, found["duplicate orders"]
    assert record["faults"][0]["name"] == "kill -9" and record["faults"][0]["endS"] is not None
    assert sum(k["requests"] for k in record["kinds"]) > 50
    assert_strict(record)
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]
    assert Path(record["files"]["record"]).is_file()
    # Progress went to stderr while it ran, in order; stdout held the record alone (parsed above).
    said = stderr.splitlines()
    marks = [
        "start-up:",
        "workload: second 1 of 12",
        "fault injected",
        "fault lifted",
        "recovery:",
        "checks:",
    ]
    at = [next(i for i, line in enumerate(said) if line.startswith(mark)) for mark in marks]
    assert at == sorted(at), said
    assert "workload: second 12 of 12" in stderr


def test_a_short_partition_loses_and_duplicates_nothing(layout: Layout, tmp_path: Path) -> None:
    code, record, stderr = run_fresh(layout, tmp_path, "partition")
    found = checks_of(record)
    assert found["lost for good"]["value"] == 0, found["lost for good"]
    assert found["duplicate orders"]["value"] == 0, found["duplicate orders"]
    # Writes happened on both sides of the cut.
    assert {b["region"] for b in record["timeline"] if b["outcome"] == "ok"} >= {EU, AP}
    assert_strict(record)
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]


def test_a_drill_fails_when_replication_is_broken_on_purpose(
    layout: Layout, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BOOKSTORE_TEST_FAULTS", "1")
    # Writes on both sides: a partition (the link simulator's cut on one machine, the regions' cut
    # switches on hosts).
    scenario = "partition"
    with layout.up(tmp_path, edge="") as system:
        # Neither region applies what it receives (nor repairs it by anti-entropy, which applies too).
        for region in (EU, AP):
            system.pause_replication(region)
        code, record, _ = system.drill(scenario, "--duration", "8", "--rate", "15", "--settle", "3")
    found = checks_of(record)
    assert code == 1 and record["passed"] is False
    assert not found["lost for good"]["held"] and found["lost for good"]["value"] > 0
    # Each missing order is named with its key, and the RPO counts it.
    assert len(found["lost for good"]["listed"]) == found["lost for good"]["value"]
    assert "Idempotency-Key" in found["lost for good"]["listed"][0]
    assert not found["RPO"]["held"]
    (convergence,) = [check for name, check in found.items() if name.startswith("convergence after")]
    assert not convergence["held"]


@pytest.mark.parametrize("scenario", ["api-break", "clock-skew"])
def test_every_other_scenario_runs_and_says_what_held(layout: Layout, tmp_path: Path, scenario: str) -> None:
    code, record, stderr = run_fresh(layout, tmp_path, scenario)
    assert_held(scenario, code, record, stderr)


def assert_held(scenario: str, code: int, record: dict[str, Any], stderr: str) -> None:
    """The drill ran its fault to the end and every check held, nothing lost or duplicated."""
    found = checks_of(record)
    assert record["scenario"] == scenario and record["faults"] and record["faults"][0]["endS"] is not None
    assert found["lost for good"]["value"] == 0 and found["duplicate orders"]["value"] == 0, found
    assert_strict(record)
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]


def test_a_slow_link_makes_replication_late_by_at_least_its_delay(layout: Layout, tmp_path: Path) -> None:
    code, record, stderr = run_fresh(layout, tmp_path, "slow-link")
    assert_held("slow-link", code, record, stderr)
    # Ten times the pair's 85 ms each way: the link simulator's delay on one machine; on hosts, where
    # there is none, what each region's slow switch adds to what it sends the other.
    slowed = 10 * DEFAULT_DELAYS_MS[frozenset({EU, AP})]
    fault = record["faults"][0]
    named = {ONE_MACHINE: f"link delay x10 ({slowed:g} ms, {slowed:g} ms)"}
    assert fault["name"] == named.get(
        layout.name, f"link delay +{slowed:g} ms each way (the regions' slow switches)"
    )
    # A change applied while the link was slow crossed it late: its replication lag is at least the delay.
    during = [p["lagMs"] for p in record["lag"] if fault["startS"] <= p["atS"] <= fault["endS"]]
    assert max(lag or 0.0 for lag in during) >= slowed, during


def test_a_blog_failover_in_three_regions_keeps_every_acknowledged_post(
    layout: Layout, tmp_path: Path
) -> None:
    # The suite's three-region drill: `--regions 3` starts the topology's third region.
    code, record, stderr = run_fresh(layout, tmp_path, "blog-failover", regions=3)
    found = checks_of(record)
    assert [r["id"] for r in record["regions"]] == [EU, AP, US] and record["params"]["regions"] == 3
    assert_strict(record)
    assert found["blog primary moved, old primary rejoined"]["held"], found
    assert f"{US} follow" in found["blog primary moved, old primary rejoined"]["detail"]
    # The author's posts were written through the edge and looked up in every region afterwards.
    assert record["params"]["blogPostsSent"] > 20
    assert "RTO of blog-post" in found
    assert found["blog lost posts"]["held"] and found["blog RPO"]["held"], found
    for region in (EU, AP, US):
        assert f"{region} 0" in found["blog lost posts"]["detail"]
    assert code == 0, [c for c in record["checks"] if not c["held"]] or stderr[-2000:]
