"""The drill runner's `--regions N` (the topology's first N regions, home first) and shoppers' spread."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookstore.config import Topology
from bookstore.drills.runner import Options, _sized, _spread
from bookstore.drills.workload import Shopper


def test_regions_3_starts_the_third_region_and_writes_the_topology_beside_the_record(tmp_path: Path) -> None:
    topology = Topology()
    assert topology.active == ("eu-west-1", "ap-southeast-1")
    sized, path = _sized(topology, Options("partition", regions=3), tmp_path)
    assert sized.active == ("eu-west-1", "ap-southeast-1", "us-east-1")
    assert path == tmp_path / "topology.json" and Topology.load(path) == sized
    # Everything else is the topology's own.
    assert sized.model_copy(update={"active": topology.active}) == topology


def test_regions_2_keeps_the_home_region(tmp_path: Path) -> None:
    topology = Topology(active=("ap-southeast-1", "us-east-1"), home_region="us-east-1")
    sized, _ = _sized(topology, Options("partition", regions=2), tmp_path)
    assert "us-east-1" in sized.active and len(sized.active) == 2
    same, path = _sized(topology, Options("partition"), tmp_path)
    assert same is topology and path is None


@pytest.mark.parametrize(
    ("options", "says"),
    [
        (Options("partition", regions=3, attach=True), "the running system has 2 active regions"),
        (Options("partition", regions=4), "--regions must be from 2 to 3"),
    ],
)
def test_regions_that_cannot_be_drilled_are_refused(tmp_path: Path, options: Options, says: str) -> None:
    with pytest.raises(RuntimeError, match=says):
        _sized(Topology(), options, tmp_path)


def test_shoppers_of_a_both_sides_drill_are_in_every_region() -> None:
    shoppers = [Shopper(f"s{i}@example.com", f"c{i}", "t", "eu-west-1") for i in range(6)]
    regions = ["eu-west-1", "ap-southeast-1", "us-east-1"]
    assert [s.location for s in _spread(shoppers, regions, True)] == regions * 2
    assert _spread(shoppers, regions, False) == shoppers


def hosts(agents: bool) -> Topology:
    """Two regions on hosts of their own, each with an agent or none."""
    regions = tuple(r.model_copy(update={"agent_port": 7071 if agents else None}) for r in Topology().regions)
    return Topology(regions=regions, links="direct", supervised=False)


@pytest.mark.parametrize(
    ("options", "agents", "says"),
    [
        (
            Options("api-break"),
            True,
            "start its regions and edge on their hosts, then drill them with --attach",
        ),
        (
            Options("region-outage", attach=True),
            False,
            "region-outage kills and starts a region.*eu-west-1, ap-southeast-1 has none.*agent_port.*"
            "drills that run here: api-break, partition, slow-link, clock-skew$",
        ),
        (Options("blog-failover", attach=True), False, "blog-failover kills and starts a region"),
    ],
)
def test_without_a_supervisor_attached_drills_run_on_the_regions_switches_and_agents(
    options: Options, agents: bool, says: str
) -> None:
    from bookstore.drills.runner import _without_supervisor
    from bookstore.drills.scenarios import SCENARIOS

    with pytest.raises(RuntimeError, match=says):
        _without_supervisor(SCENARIOS[options.scenario](), options, hosts(agents))
    for runnable in ("clock-skew", "partition", "slow-link"):
        _without_supervisor(SCENARIOS[runnable](), Options(runnable, attach=True), hosts(False))
    for runnable in ("region-outage", "blog-failover"):
        _without_supervisor(SCENARIOS[runnable](), Options(runnable, attach=True), hosts(True))


def test_without_a_supervisor_the_control_api_s_switch_paths_name_the_region_s_switches() -> None:
    from bookstore.runtime.switches import switches_of

    assert switches_of("POST", "/api/eu-west-1/break", None) == ("eu-west-1", {"api": "broken"})
    assert switches_of("POST", "/s3/eu-west-1/repair", None) == ("eu-west-1", {"s3": "ok"})
    assert switches_of("POST", "/clock/us-east-1", {"skewMs": 2000}) == ("us-east-1", {"clockSkewMs": 2000})
    assert switches_of("POST", "/regions/eu-west-1/kill", None) is None
    assert switches_of("GET", "/api/eu-west-1/break", None) is None
