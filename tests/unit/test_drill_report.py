"""The drill's report: the HTML page (chart, checks, kinds, escaping, no network)."""

from __future__ import annotations

import xml.etree.ElementTree as ET
from collections import defaultdict
from html.parser import HTMLParser
from pathlib import Path

from bookstore.drills.record import Record
from bookstore.drills.report import write_html
from tests.support.drill_records import HOME, HOSTILE, MARKUP, OTHER, region_outage_record

SVG = "{http://www.w3.org/2000/svg}"
LISTED = [
    f"k-0001 (checkout, Idempotency-Key a1, customer c1, acknowledged at 9.816 s by {HOME})",
    f"k-0002 (checkout, Idempotency-Key {HOSTILE}, customer c2, acknowledged at 9.9 s by {HOME})",
    f"k-0003 (writer, Idempotency-Key a3, customer c1, acknowledged at 9.95 s by {HOME})",
]


class Page(HTMLParser):
    """What a reader of the report gets: the text of each table's rows, every tag, every text."""

    def __init__(self, text: str) -> None:
        super().__init__(convert_charrefs=True)
        self.rows: dict[str, list[list[str]]] = defaultdict(list)
        self.tags: list[tuple[str, dict[str, str | None]]] = []
        self.text: list[str] = []
        self._table: str | None = None
        self._row: list[str] | None = None
        self._cell: list[str] | None = None
        self.feed(text)
        self.close()

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        attributes = dict(attrs)
        self.tags.append((tag, attributes))
        if tag == "table":
            self._table = attributes.get("class") or ""
        elif tag == "tr" and self._table is not None:
            self._row = []
        elif tag in ("td", "th") and self._row is not None:
            self._cell = []

    def handle_endtag(self, tag: str) -> None:
        if tag in ("td", "th") and self._row is not None and self._cell is not None:
            self._row.append("".join(self._cell).strip())
            self._cell = None
        elif tag == "tr" and self._table is not None and self._row is not None:
            self.rows[self._table].append(self._row)
            self._row = None
        elif tag == "table":
            self._table = None

    def handle_data(self, data: str) -> None:
        if self._cell is not None:
            self._cell.append(data)
        self.text.append(data)

    def classes(self, tag: str) -> list[str]:
        return [attrs.get("class") or "" for name, attrs in self.tags if name == tag]


def report(record: Record) -> str:
    path = Path(record["files"]["report"])
    write_html(record, path)
    return path.read_text(encoding="utf-8")


def chart(text: str) -> ET.Element:
    """The inline SVG, parsed as the XML it must be."""
    return ET.fromstring(text[text.index("<svg") : text.index("</svg>") + len("</svg>")])


def ids(svg: ET.Element) -> set[str]:
    return {element.attrib["id"] for element in svg.iter() if "id" in element.attrib}


def test_the_chart_draws_every_series_fault_event_and_lag_pair(tmp_path: Path) -> None:
    record = region_outage_record(tmp_path)
    svg = chart(report(record))

    assert svg.tag == f"{SVG}svg"
    assert svg.attrib["role"] == "img"
    drawn = ids(svg)
    series = {f"series-{b['outcome']}-{b['region']}" for b in record["timeline"]}
    assert series == {
        f"series-ok-{HOME}",
        f"series-ok-{OTHER}",
        f"series-retried-{OTHER}",
        "series-failed-none",
    }
    assert series <= drawn
    assert {f"lag-{HOME}-{OTHER}", f"lag-{OTHER}-{HOME}", "fault-1"} <= drawn
    assert {f"event-{n}" for n in range(1, len(record["events"]) + 1)} <= drawn
    for gid in series:
        group = next(e for e in svg.iter() if e.attrib.get("id") == gid)
        shapes = [path.attrib["d"] for path in group.iter(f"{SVG}path")]
        assert shapes and all(d.strip() for d in shapes), gid


def test_the_chart_has_only_the_series_the_record_holds(tmp_path: Path) -> None:
    record = region_outage_record(tmp_path)
    record["timeline"] = [b for b in record["timeline"] if b["outcome"] == "ok"]
    record["lag"] = [p for p in record["lag"] if p["source"] == HOME]

    drawn = ids(chart(report(record)))

    assert {f"series-ok-{HOME}", f"series-ok-{OTHER}", f"lag-{HOME}-{OTHER}"} <= drawn
    assert not {i for i in drawn if i.startswith(("series-failed", "series-retried"))}
    assert f"lag-{OTHER}-{HOME}" not in drawn


def test_the_checks_table_shows_value_goal_and_whether_each_held(tmp_path: Path) -> None:
    page = Page(report(region_outage_record(tmp_path)))

    header, *rows = page.rows["checks"]
    assert header == ["Check", "Value", "Goal", "Held", "Detail"]
    assert rows == [
        ["RTO of browse", "0.84 s", "<= 2 s", "✓ held", "browse"],
        ["RPO", "184 ms", "<= 300 ms", "✓ held", "3 orders missing3 listed" + "".join(LISTED)],
        ["lost for good", "0 orders", "= 0", "✓ held", MARKUP],
        ["duplicate orders", "0 orders", "= 0", "✓ held", "by key"],
        [
            "convergence after recovery",
            "6.2 s",
            "<= 5 s",
            "✗ not held",
            f"digests equal 6.2 s after the restart {HOSTILE}",
        ],
    ]
    assert page.classes("tr").count("not-held") == 1
    assert "verdict failed" in page.classes("p")
    assert "Failed: 1 of 5 checks did not hold (convergence after recovery)." in page.text


def test_the_kinds_table_shows_requests_failures_rto_and_latency(tmp_path: Path) -> None:
    page = Page(report(region_outage_record(tmp_path)))

    header, *rows = page.rows["kinds"]
    assert header == ["Kind", "Requests", "Failed", "RTO", "p50", "p99"]
    assert rows[0] == ["browse", "700", "5", "0.84 s", "11.5 ms", "212 ms"]
    assert rows[2] == ["checkout", "140", "0", "—", "21.2 ms", "318 ms"]
    assert [row[0] for row in rows] == ["browse", "cart", "checkout", "blog", "static"]
    assert rows[3][3] == "≥ 0.7 s (not recovered)"


def test_what_a_check_lists_is_on_the_page_folded_under_its_count(tmp_path: Path) -> None:
    text = report(region_outage_record(tmp_path))
    page = Page(text)
    assert "listed" in page.classes("details")
    assert [t for t in page.text if t in LISTED] == LISTED
    assert HOSTILE not in text  # escaped like every other string of the record


def test_every_string_of_the_record_is_escaped(tmp_path: Path) -> None:
    record = region_outage_record(tmp_path)
    record["faults"].append({"name": "$skew$ <b>", "target": OTHER, "startS": 30.0, "endS": None})

    text = report(record)
    page = Page(text)

    assert HOSTILE not in text
    assert text.count("&lt;script&gt;alert(&quot;drill&quot;)&lt;/script&gt;") == 5  # one in a listed item
    assert "script" not in [tag for tag, _ in page.tags]
    assert "b" not in [tag for tag, _ in page.tags]
    # What the reader sees is the record's text itself, only escaped on the way.
    shown = "".join(page.text)
    assert f"kill -9 the home region, later restart it {HOSTILE}" in shown
    assert f"operator's note {HOSTILE}" in shown
    assert ["$skew$ <b>", OTHER, "30 s", "not lifted"] in page.rows["faults"]


def test_the_page_needs_no_network(tmp_path: Path) -> None:
    text = report(region_outage_record(tmp_path))
    page = Page(text)

    assert not [tag for tag, _ in page.tags if tag in ("script", "link", "img", "iframe")]
    references = [
        attrs[a] or "" for _, attrs in page.tags for a in ("src", "href", "xlink:href") if a in attrs
    ]
    assert references and all(ref.startswith("#") for ref in references)  # only the SVG's own glyphs
    assert "@import" not in text
    assert "url(http" not in text


def test_a_drill_that_passed_with_little_recorded_still_has_a_report(tmp_path: Path) -> None:
    record = region_outage_record(tmp_path)
    record.update({"faults": [], "events": [], "timeline": [], "lag": [], "passed": True})
    record["checks"] = [c for c in record["checks"] if c["held"]]

    text = report(record)
    page = Page(text)

    assert "verdict passed" in page.classes("p")
    assert "Passed: all 4 checks held." in page.text
    assert "No fault was injected." in page.text
    assert "Nothing notable was recorded." in page.text
    assert not {i for i in ids(chart(text)) if i.startswith(("series-", "lag-", "fault-", "event-"))}
