"""bookstore.drills.remote without a system: the switch answers only the home API's break and repair,
and the API is repaired when the drill fails."""

from __future__ import annotations

import asyncio
from pathlib import Path

import pytest

from bookstore.drills import remote
from bookstore.drills.runner import Options


class Recording:
    def __init__(self) -> None:
        self.calls: list[str] = []

    def break_api(self) -> None:
        self.calls.append("break")

    def repair(self) -> bool:
        self.calls.append("repair")
        return True


def _failing_users(emails: list[str], password: str) -> list[str]:
    raise RuntimeError("the users table refused")


def test_the_switch_breaks_and_repairs_the_home_api_only() -> None:
    breaker = Recording()
    target = remote.site(
        "https://d.example.net/", {"eu-west-1": "a", "us-east-1": "b"}, "eu-west-1", _failing_users, breaker
    )
    assert target.edge == "https://d.example.net" and target.other == "us-east-1"
    assert target.switch is not None
    assert asyncio.run(target.switch("GET", "/links", {})) == {"links": []}
    assert asyncio.run(target.switch("POST", "/api/eu-west-1/break", {}))["api"] == "broken"
    assert asyncio.run(target.switch("POST", "/api/eu-west-1/repair", {}))["api"] == "ok"
    assert breaker.calls == ["break", "repair"]
    for method, path in (("POST", "/api/us-east-1/break"), ("POST", "/links/eu-west-1/us-east-1")):
        with pytest.raises(RuntimeError, match="only the home region's API"):
            asyncio.run(target.switch(method, path, {}))
    assert "blog" not in target.mix and not target.replication_status


def test_the_api_is_repaired_when_the_drill_fails(tmp_path: Path) -> None:
    breaker = Recording()
    target = remote.site(
        "https://d.example.net", {"eu-west-1": "a", "us-east-1": "b"}, "eu-west-1", _failing_users, breaker
    )
    with pytest.raises(RuntimeError, match="the users table refused"):
        remote.run(target, breaker, Options("api-break", data_dir=tmp_path))
    assert breaker.calls == ["repair"]


@pytest.mark.parametrize("scenario", ["partition", "blog-failover", "region-outage"])
def test_scenarios_that_need_the_supervisor_are_refused(tmp_path: Path, scenario: str) -> None:
    breaker = Recording()
    target = remote.site(
        "https://d.example.net", {"eu-west-1": "a", "us-east-1": "b"}, "eu-west-1", _failing_users, breaker
    )
    with pytest.raises(RuntimeError, match="api-break can"):
        remote.run(target, breaker, Options(scenario, data_dir=tmp_path))
