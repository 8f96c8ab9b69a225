"""`bookstore up` with JSON logs and the access log: the edge's request id in the region's JSON line."""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.regions import system_up

pytestmark = pytest.mark.system

EU = "eu-west-1"
OBSERVABILITY = '\n[observability]\nlog_format = "json"\naccess_log = true\n'


def json_lines(path: Path) -> list[dict[str, Any]]:
    """Every log line of the run that is JSON (the supervisor's banner is printed for people)."""
    return [
        json.loads(line) for line in path.read_text(errors="replace").splitlines() if line.startswith("{")
    ]


def test_the_regions_json_access_line_carries_the_edges_request_id(tmp_path: Path) -> None:
    with system_up(tmp_path, edge="", extra=OBSERVABILITY) as system:
        with httpx.Client(base_url=system.topology.edge.url, timeout=15) as client:
            answer = client.get("/api/books/bk-cook-001", headers={"X-Client-Region": EU})
            assert answer.status_code == 200, answer.text
            request_id = answer.headers["x-request-id"]
            given = client.get("/api/truth", headers={"X-Client-Region": EU, "X-Request-Id": "drill-7"})
            assert given.headers["x-request-id"] == "drill-7"
        deadline = time.monotonic() + 10
        while True:
            lines = json_lines(tmp_path / "up.log")
            seen = {
                (line["region"], line["fields"].get("request_id"))
                for line in lines
                if line["event"] == "request" and "fields" in line
            }
            if {(EU, request_id), ("edge", request_id), (EU, "drill-7")} <= seen:
                break
            assert time.monotonic() < deadline, sorted(seen)[-10:]
            time.sleep(0.2)
    assert {line["level"] for line in lines} <= {"DEBUG", "INFO", "WARNING", "ERROR", "CRITICAL"}
    assert {"supervisor", EU, "edge"} <= {line["region"] for line in lines}
    assert all(line["timestamp"].endswith("Z") for line in lines)
