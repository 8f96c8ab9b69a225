"""bench/report.write keeps the separate-run sections of docs/performance.md that a full run did not redo."""

from __future__ import annotations

from pathlib import Path

from bench.report import write

OLD = """# Performance

| old main table |

## API of one region process

old figures

## Anti-entropy at 10k, 100k and 1M items (a separate run)

old anti-entropy figures

## Memory held by a large S3 upload (a separate run)

upload figures
"""

NEW = """# Performance

| new main table |

## API of one region process

new figures

## Anti-entropy at 10k, 100k and 1M items

new anti-entropy figures
"""


def test_a_full_run_keeps_separate_runs_it_did_not_redo_and_replaces_the_ones_it_did(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    doc.write_text(OLD, encoding="utf-8")
    write(doc, NEW)
    text = doc.read_text(encoding="utf-8")
    assert text.startswith(NEW.rstrip())
    assert "upload figures" in text and "## Memory held by a large S3 upload (a separate run)" in text
    assert "old anti-entropy figures" not in text and "old figures" not in text


def test_a_first_report_is_written_as_is(tmp_path: Path) -> None:
    doc = tmp_path / "performance.md"
    write(doc, NEW)
    assert doc.read_text(encoding="utf-8") == NEW


def test_a_full_run_reports_each_modules_time_and_the_whole_against_thirty_minutes() -> None:
    from bench.__main__ import run_time

    full = run_time({"api": 120.0, "backlog": 1700.0}, full=True)
    assert [f.name for f in full.figures] == ["Run time: api", "Run time: backlog", "Run time: every module"]
    total = full.figures[-1]
    assert total.value == 1820.0 / 60 and total.unit == "min"
    assert total.verdict == "MISSED"
    assert run_time({"api": 120.0}, full=True).figures[-1].verdict == "met"


def test_a_run_of_some_modules_has_no_goal_for_its_time() -> None:
    from bench.__main__ import run_time

    some = run_time({"edge": 90.0}, full=False)
    assert some.figures[-1].name == "Run time: the modules run"
    assert some.figures[-1].verdict == ""
