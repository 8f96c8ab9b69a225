"""The api-break drill against a system our supervisor does not drive (bookstore.drills.remote, which
`bookstore aws drill` runs against AWS): here a local system stands in for the deployed one, its edge as
the public endpoint, and an injected breaker flips the home region's api-break switch where the Lambda
breaker sets the function's environment; the same runner computes RTO, RPO, loss and duplicates."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bookstore.drills import remote
from bookstore.drills.runner import Options, _local_site
from bookstore.kernel.clock import SystemClock
from bookstore.runtime.secret import operator_secret
from bookstore.runtime.switches import switch_faults
from tests.support.regions import System, system_up

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("drills")]


class SwitchBreaker:
    """The stand-in for the Lambda breaker: the local home region's api-break switch, its calls kept."""

    def __init__(self, system: System) -> None:
        self.home = system.topology.region(system.topology.home_region)
        self.secret = operator_secret(system.data_dir)
        self.broken = False
        self.calls: list[str] = []

    def _switch(self, api: str) -> None:
        asyncio.run(switch_faults(self.home.api_url, self.home.id, self.secret, SystemClock(), {"api": api}))

    def break_api(self) -> None:
        self.calls.append("break")
        self._switch("broken")
        self.broken = True

    def repair(self) -> bool:
        self.calls.append("repair")
        was, self.broken = self.broken, False
        self._switch("ok")
        return was


def test_the_remote_drill_breaks_measures_through_the_public_endpoint_and_repairs(tmp_path: Path) -> None:
    with system_up(tmp_path, edge="") as system:
        topology = system.topology
        breaker = SwitchBreaker(system)
        target = remote.site(
            topology.edge.url,
            {r: topology.region(r).api_url for r in topology.active},
            topology.home_region,
            _local_site(topology, system.data_dir).add_users,
            breaker,
        )
        options = Options(
            "api-break", rate=15, duration_s=12, attach=True, data_dir=tmp_path / "records", settle_s=10
        )
        record = remote.run(target, breaker, options)
    # The drill's own repair at its schedule, then the one of `finally` (which finds nothing to do).
    assert breaker.calls == ["break", "repair", "repair"] and not breaker.broken
    checks = {c["name"]: c for c in record["checks"]}
    for name in ("RTO of browse", "RTO of checkout", "RPO", "lost for good", "duplicate orders"):
        assert name in checks, sorted(checks)
    # No digests nor conflicts where the engines replicate; convergence is every order everywhere.
    assert "regions equal after the workload" not in checks
    assert record["faults"][0]["name"] == "API mapping removed" and record["faults"][0]["endS"] is not None
    assert not any(k["kind"] == "blog" for k in record["kinds"])
    assert record["passed"], [c for c in record["checks"] if not c["held"]]
    assert (Path(record["files"]["record"])).is_file()
