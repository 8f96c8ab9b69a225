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
