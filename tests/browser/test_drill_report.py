"""The drill's HTML report in headless Chromium: no console error, no network, a readable chart."""

from __future__ import annotations

from pathlib import Path

import pytest
from playwright.sync_api import BrowserContext, Request, expect

from bookstore.drills.report import write_html
from tests.browser.storefront import ConsoleWatch
from tests.support.drill_records import HOME, OTHER, region_outage_record

pytestmark = [pytest.mark.browser, pytest.mark.xdist_group("browser")]


def test_the_report_renders_its_timeline_chart(
    context: BrowserContext, console: ConsoleWatch, tmp_path: Path
) -> None:
    record = region_outage_record(tmp_path)
    report = Path(record["files"]["report"])
    write_html(record, report)
    page = console.watch(context.new_page())
    fetched: list[str] = []

    def outside(request: Request) -> None:
        if not request.url.startswith(("file:", "data:")):
            fetched.append(request.url)

    page.on("request", outside)
    page.goto(report.as_uri())

    expect(page.get_by_role("heading", level=1)).to_contain_text("region-outage")
    expect(page.locator(".verdict.failed")).to_contain_text("convergence after recovery")
    expect(page.locator("table.checks tr.not-held")).to_have_count(1)
    chart = page.get_by_role("img", name="Timeline of the drill region-outage")
    expect(chart).to_be_visible()
    box = chart.bounding_box()
    assert box is not None
    # Readable on a 1280-px wide page: most of its width, and tall enough for both charts.
    assert box["width"] >= 900
    assert box["height"] >= 500
    for series in (
        f"series-ok-{HOME}",
        f"series-retried-{OTHER}",
        "series-failed-none",
        f"lag-{HOME}-{OTHER}",
    ):
        drawn = page.locator(f"[id='{series}']")
        expect(drawn).to_have_count(1)
        size = drawn.bounding_box()
        assert size is not None and size["width"] > 0 and size["height"] > 0, series

    shot = tmp_path / "drill-report-desktop.png"
    page.screenshot(path=str(shot), full_page=True)
    assert shot.stat().st_size > 50_000
    print(f"wrote {shot}")
    assert console.errors == []
    assert fetched == []
