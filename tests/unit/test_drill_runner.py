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
