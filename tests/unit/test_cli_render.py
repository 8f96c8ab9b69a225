"""The command line's tables: `bookstore status` and `link`, and a drill's summary in the terminal."""

from __future__ import annotations

import io
import re
from pathlib import Path
from typing import Any

import pytest
from rich.console import Console

from bookstore.cli import render
from tests.support.drill_records import MARKUP, region_outage_record


def test_the_terminal_summary_colours_the_checks_and_names_the_files(tmp_path: Path) -> None:
    record = region_outage_record(tmp_path)
    out = io.StringIO()
    console = Console(file=out, width=220, force_terminal=True, color_system="standard")

    render.drill_summary(record, console)

    printed = out.getvalue()
    assert "\x1b[1;31mFAILED" in printed
    assert printed.count("\x1b[32mheld") == 4
    assert printed.count("\x1b[1;31mnot held") == 1
    assert MARKUP in printed  # the record's text is shown, never read as rich markup
    for name in ("RTO of browse", "convergence after recovery", "checkout", "212 ms", "≥ 0.7 s"):
        assert name in printed
    assert "k-0001 (checkout, Idempotency-Key a1" in printed  # what the RPO check listed
    assert record["files"]["record"] in printed
    assert record["files"]["report"] in printed


def status_report() -> dict[str, Any]:
    """A report as `collect` gathers it, with text a region could send that reads as rich markup."""
    return {
        "regions": [
            {
                "regionId": "eu-west-1",
                "name": "Ireland",
                "healthy": True,
                "conflicts": 3,
                "apiUrl": "http://eu",
            },
            {
                "regionId": "ap-southeast-1",
                "name": "Singapore",
                "healthy": False,
                "conflicts": None,
                "apiUrl": "http://ap",
            },
            {
                "regionId": "us-east-1",
                "name": "N. Virginia",
                "healthy": False,
                "active": False,
                "conflicts": None,
                "apiUrl": "http://us",
            },
        ],
        "replication": [
            {
                "source": "eu-west-1",
                "destination": "ap-southeast-1",
                "connected": True,
                "pending": 4,
                "lagP50Ms": 92.5,
                "lagP99Ms": 3.25,
                "checkpoint": 120,
            },
            {
                "source": "ap-southeast-1",
                "destination": "eu-west-1",
                "connected": False,
                "followed": False,
                "notFollowed": {"offsetMs": 7000},
                "pending": None,
                "lagP50Ms": None,
                "lagP99Ms": None,
                "checkpoint": None,
            },
        ],
        "objects": [
            {
                "source": "eu-west-1",
                "destination": "ap-southeast-1",
                "pendingOperations": 2,
                "pendingBytes": 2048,
                "latencyP50Ms": 12.0,
                "latencyP99Ms": 80.0,
                "completed": 10,
                "failed": 1,
                "lastError": "boom [x]",
                "reachable": False,
                "recentFailures": [
                    {
                        "bucket": "b",
                        "key": "k[bold]",
                        "versionId": "v1",
                        "destination": "ap-southeast-1",
                        "reason": "503",
                    }
                ],
            },
        ],
        "blog": {
            "primary": "eu-west-1",
            "epoch": 2,
            "regions": [
                {
                    "regionId": "eu-west-1",
                    "role": "primary",
                    "needsRejoin": False,
                    "epoch": 2,
                    "headLsn": 40,
                    "appliedLsn": None,
                    "lagEntries": None,
                    "lagSeconds": None,
                    "diverged": 0,
                },
            ],
        },
        "edge": {
            "edge": {
                "url": "http://edge",
                "nowMs": 1_764_990_000_000,
                "healthPreset": "fast",
                "healthCheck": {
                    "path": "/health",
                    "interval_s": 1,
                    "timeout_s": 0.5,
                    "failure_threshold": 2,
                    "success_threshold": 1,
                },
                "dns": {"address": "127.0.0.1:5353", "listening": False, "error": "port taken"},
            },
            "targets": [
                {
                    "id": "eu-west-1",
                    "healthy": True,
                    "sinceMs": 1_764_989_990_000,
                    "lastCheck": {"reason": "200 [ok]"},
                    "breaker": {"open": True, "reason": "5 failures"},
                    "changes": [1, 2],
                }
            ],
            "routing": {
                "records": {
                    "api": {"answers": {"eu-west-1": ["eu-west-1", "ap-southeast-1"]}},
                    "blog": {"policy": "failover", "order": ["eu-west-1"]},
                    "static": {"policy": "origin group", "order": []},
                }
            },
            "counters": {"requests": 5, "failovers": 1},
        },
        "links": [
            {
                "src": "eu-west-1",
                "dst": "ap-southeast-1",
                "delayMs": 85,
                "jitterMs": 2.5,
                "loss": 0.0,
                "cut": False,
            },
            {
                "src": "ap-southeast-1",
                "dst": "eu-west-1",
                "delayMs": 85.0,
                "jitterMs": None,
                "loss": 0.5,
                "cut": True,
            },
        ],
        "supervisor": True,
    }


def printed(capsys: pytest.CaptureFixture[str]) -> str:
    return " ".join(capsys.readouterr().out.split())  # one line: a wrapped cell reads whole


def test_the_status_tables_show_every_part_and_never_read_a_region_s_text_as_markup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    render.status(status_report())

    out = printed(capsys)
    for title in (
        "Regions",
        "Table replication",
        "Object replication",
        "Blog database",
        "Edge records",
        "Links",
    ):
        assert title in out
    assert "no: clock 7000 ms ahead" in out and "not started" in out
    assert "boom [x]" in out and "FAILED b/k[bold] v1 -> ap-southeast-1: 503" in out and "200 [ok]" in out
    assert "open 5 failures" in out and "DNS 127.0.0.1:5353 off (port taken)" in out
    assert "eu-west-1 -> ap-southeast-1 │ 85 │ 2.5 │ 0.0 │ up" in out
    assert "ap-southeast-1 -> eu-west-1 │ 85 │ - │ 0.5 │ cut" in out


def test_without_a_supervisor_the_status_says_links_are_unavailable(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    report = {**status_report(), "links": [], "supervisor": False}
    del report["edge"]

    render.status(report)

    out = printed(capsys)
    assert "no supervisor answers: links and process control are unavailable" in out
    assert "Links" not in out and "Edge records" not in out


def test_on_a_topology_without_a_supervisor_the_status_says_so_rather_than_that_none_answers(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    render.status({**status_report(), "links": None, "supervisor": False, "supervised": False})

    out = printed(capsys)
    assert "no supervisor in this topology (regions on their own hosts)" in out
    assert "no supervisor answers" not in out

    render.status({**status_report(), "links": []})
    assert "the regions reach each other directly" in printed(capsys)


def test_the_credentials_say_where_they_are_and_print_no_secret(capsys: pytest.CaptureFixture[str]) -> None:
    render.credentials(
        {
            "s3AccessKeyId": "AKIA[b]",
            "s3Credentials": "/d/s3",
            "operatorToken": "/d/tok",
            "operatorLink": None,
        }
    )

    out = printed(capsys)
    assert "S3 access key id AKIA[b] (/d/s3)" in out and "operator token in /d/tok" in out
    assert "one-time sign-in" not in out


def blog_region(region: str, role: str | None, **state: Any) -> dict[str, Any]:
    """One region's row of the blog overview, as `replication.blog.operator.overview` builds it."""
    blank = dict.fromkeys(("epoch", "headLsn", "appliedLsn", "lagEntries", "lagSeconds", "diverged"))
    return {"regionId": region, "role": role, "needsRejoin": False, **blank, **state}


def test_the_blog_table_shows_each_region_s_role_position_and_lag(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "240")
    render.blog_overview(
        {
            "primary": "eu-west-1",
            "epoch": 3,
            "regions": [
                blog_region("eu-west-1", "primary", epoch=3, headLsn=40, appliedLsn=7, diverged=0),
                blog_region(
                    "ap-southeast-1",
                    "replica",
                    epoch=3,
                    headLsn=99,
                    appliedLsn=38,
                    lagEntries=2,
                    lagSeconds=0.12345,
                ),
                blog_region("us-east-1", None),
                blog_region("sa-east-1", "fenced", needsRejoin=True, epoch=2, headLsn=41, diverged=3),
            ],
        }
    )

    out = printed(capsys)
    assert "Blog database (primary eu-west-1, epoch 3)" in out
    assert "eu-west-1 │ primary │ 3 │ 40 │ │ │ 0" in out  # a primary's position is its head
    assert "ap-southeast-1 │ replica │ 3 │ 38 │ 2 │ 0.123 │" in out  # a replica's what it applied
    assert "us-east-1 │ unreachable │" in out
    assert "sa-east-1 │ fenced (needs rejoin) │ 2 │ 41 │ │ │ 3" in out


def test_the_diverged_writes_show_what_was_kept_and_never_read_a_region_s_text_as_markup(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "300")
    kept = {"epoch": 2, "newEpoch": 3, "newPrimary": "eu-west-1"}
    render.blog_diverged(
        {
            "eu-west-1": {"region": "eu-west-1", "error": "unreachable [bold]x[/bold]"},
            "sa-east-1": {
                "diverged": [
                    {"lsn": 41, "writtenMs": 1_764_990_000_123, "table": "posts", "op": "insert",
                     "pk": {"id": "p[1]"}, "row": {"title": "[red]T[/red] " + "x" * 80}, **kept},
                    {"lsn": 43, "writtenMs": 1_764_990_002_000, "table": "tags", "op": "delete",
                     "pk": "t", "row": None, **kept},
                ]
            },
        }
    )  # fmt: skip

    out = printed(capsys)
    assert "Diverged writes" in out and "unreachable [bold]x[/bold]" in out
    title = ("[red]T[/red] " + "x" * 80)[:60]  # the post's title, cut to sixty characters
    written = "2025-12-06 03:00:00"  # UTC, to the second
    assert (
        f'sa-east-1 │ 41 │ 2 │ {written} │ posts │ insert │ {{"id":"p[1]"}} │ {title} │ 3 (eu-west-1)' in out
    )
    assert 'sa-east-1 │ 43 │ 2 │ 2025-12-06 03:00:02 │ tags │ delete │ "t" │ │ 3 (eu-west-1)' in out


def test_the_status_tables_fit_80_columns_without_cutting_a_region_name(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("COLUMNS", "80")
    report = status_report()
    for region in report["regions"]:
        region["apiUrl"] = "http://127.0.2.1:8000"
    # Every pair both ways, as three regions have them, each naming the longest region id.
    report["objects"] = [
        {**report["objects"][0], "source": a, "destination": b, "recentFailures": []}
        for a, b in (("eu-west-1", "ap-southeast-1"), ("ap-southeast-1", "us-east-1"))
    ]
    render.status(report)

    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    assert not any("…" in line for line in lines)
    shown = "\n".join(lines)
    for pair in (
        r"ap-southeast-1\s+│\s+eu-west-1",
        r"eu-west-1\s+│\s+ap-southeast-1",
        r"ap-southeast-1\s+│\s+us-east-1",
    ):
        assert re.search(pair, shown), pair
    assert re.search(r"ap-southeast-1\s+│\s+Singapore", shown) and "http://127.0.2.1:8000" in shown
    assert "ap-southeast-1 -> eu-west-1 │" in shown  # the links
