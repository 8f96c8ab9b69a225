"""Exit codes that mean something: `status` when something does not answer, an answer that is not JSON."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from bookstore.cli import app
from bookstore.runtime import operator, status
from bookstore.runtime.secret import TOKEN_ENV


def _report(*, supervisor: bool, ap_healthy: bool = True) -> dict[str, Any]:
    region = {"name": "x", "apiUrl": "http://x", "conflicts": 0, "consumers": None, "active": True}
    return {
        "supervisor": supervisor,
        "processes": None,
        "regions": [
            {**region, "regionId": "eu-west-1", "healthy": True},
            {**region, "regionId": "ap-southeast-1", "healthy": ap_healthy},
            {**region, "regionId": "us-east-1", "healthy": False, "active": False},
        ],
        "replication": [],
        "objects": [],
        "blog": {},
        "links": [],
        "edge": None,
    }


@pytest.mark.parametrize(
    ("report", "code", "said"),
    [
        (_report(supervisor=True), 0, None),
        (_report(supervisor=False), 1, "no answer from the control API at http://127.0.0.1:7070"),
        (_report(supervisor=True, ap_healthy=False), 1, "no answer from ap-southeast-1"),
    ],
)
def test_status_exits_1_when_a_region_or_the_control_api_does_not_answer(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, report: dict[str, Any], code: int, said: str | None
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "a-token")
    monkeypatch.setattr(status, "collect", lambda topology, token, verify=True: report)
    for as_json in ([], ["--json"]):
        result = CliRunner().invoke(app, ["status", "--data-dir", str(tmp_path), *as_json])
        assert result.exit_code == code, result.output
        if said is not None:
            assert said in result.stderr
        # A region the topology does not start (us-east-1 here) is not counted as silent.
        assert "us-east-1" not in result.stderr


def test_an_answer_that_is_not_json_ends_with_a_message_not_a_traceback(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "a-token")
    page = "<html><body><h1>502 Bad Gateway</h1></body></html>"
    monkeypatch.setattr(operator, "control_call", lambda *args, **kwargs: httpx.Response(502, text=page))
    result = CliRunner().invoke(app, ["link", "show", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert result.exception is None or isinstance(result.exception, SystemExit)
    assert "error: http://127.0.0.1:7070/links answered 502 with something not JSON: <html><body><h1>502" in (
        result.stderr
    )


def test_an_error_answer_without_a_message_names_the_status(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(TOKEN_ENV, "a-token")
    monkeypatch.setattr(operator, "control_call", lambda *args, **kwargs: httpx.Response(500, json=["x"]))
    result = CliRunner().invoke(app, ["link", "show", "--data-dir", str(tmp_path)])
    assert result.exit_code == 1
    assert "answered 500" in result.stderr
