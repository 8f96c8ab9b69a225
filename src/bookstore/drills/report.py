"""The drill's report: one self-contained HTML page with a timeline chart (for the terminal: cli.render)."""

from __future__ import annotations

import html
import io
import math
import re
from collections import defaultdict
from datetime import datetime
from pathlib import Path

from matplotlib import rc_context
from matplotlib.artist import Artist
from matplotlib.axes import Axes
from matplotlib.colors import to_rgba
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch
from matplotlib.typing import RcKeyType

from bookstore.drills.record import Check, Event, KindSummary, Record, RegionRef
from bookstore.drills.text import kind_cells, number

# Regions get calm colours; red stays for failed requests alone, so a failure is never mistaken for a region.
REGION_COLOURS = ("#1f6fb4", "#2e9e4f", "#8a5cc2", "#d98a1c", "#17a2b8", "#6d6d6d")
FAILED_COLOUR = "#d62728"
FAULT_COLOUR = "#9e9e9e"
EVENT_COLOURS = {
    "fault": "#a50f15",
    "recovery": "#2e7d32",
    "health": "#e67e22",
    "failover": "#6a1b9a",
    "convergence": "#00838f",
    "note": "#555555",
}
EVENT_DASH = (0, (4, 2))
OUTCOME_ORDER = ("ok", "retried", "failed")
OUTCOME_TEXT = {"ok": "ok", "retried": "ok after the edge retried", "failed": "failed"}
# Text drawn as paths needs no font in the browser; a fixed salt keeps the SVG's ids the same run to run;
# no math parsing, since a "$" in a fault's name is text, not TeX.
CHART_STYLE: dict[RcKeyType, object] = {
    "svg.fonttype": "path",
    "svg.hashsalt": "bookstore-drill",
    "text.parse_math": False,
    "font.size": 9,
}
NO_REGION = "none"
TITLE_PAD = 14  # points between a chart and its title: room for the events' numbers


def write_html(record: Record, path: Path) -> None:
    """Write the report of one drill to `path`: verdict, checks, kinds, the timeline chart, faults, events."""
    path.write_text(render_html(record), encoding="utf-8")


def render_html(record: Record) -> str:
    """The report as one HTML document: styles and chart inline, every string of the record escaped."""
    e = html.escape
    title = f"Drill {record['scenario']}: {'passed' if record['passed'] else 'failed'}"
    return f"""<!doctype html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>{e(title)}</title>
<style>{STYLE}</style>
</head>
<body>
<header>
<h1>Drill <code>{e(record["scenario"])}</code></h1>
<p class="description">{e(record["description"])}</p>
<p class="meta">Started {_started(record["startedAt"])} · workload of {e(number(record["durationS"], "s"))}
· regions {_regions(record["regions"])}</p>
</header>
{_verdict(record)}
{_section("Parameters", _params(record["params"]))}
{_section("Checks", _checks(record["checks"]))}
{_section("Requests by kind", _kinds(record["kinds"]))}
{_section("Timeline", _timeline(record))}
{_section("Faults", _faults(record))}
{_section("Events", _events(record["events"]))}
<footer>
<p>Record: <code>{e(record["files"]["record"])}</code><br>
Report: <code>{e(record["files"]["report"])}</code></p>
</footer>
</body>
</html>
"""


def timeline_svg(record: Record) -> str:
    """The timeline chart as an inline <svg> element: requests per second above, replication lag below."""
    span = _span(record)
    with rc_context(CHART_STYLE):
        figure = Figure(figsize=(11, 6.8), layout="constrained")
        grid = figure.add_gridspec(2, 1, height_ratios=(3, 2))
        requests = figure.add_subplot(grid[0])
        lag = figure.add_subplot(grid[1], sharex=requests)
        handles = _plot_requests(requests, record, span)
        lag_handles = _plot_lag(lag, record)
        for axes in (requests, lag):
            axes.set_xlim(0, span)
            axes.grid(axis="y", color="#e0e0e0", linewidth=0.6)
            axes.set_axisbelow(True)
            _mark_faults(axes, record, span, labelled=axes is requests)
            _mark_events(axes, record["events"], span, numbered=axes is requests)
        requests.legend(
            handles=handles + _marks_key(record), loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False
        )
        if lag_handles:
            lag.legend(handles=lag_handles, loc="upper left", bbox_to_anchor=(1.01, 1), frameon=False)
        requests.tick_params(labelbottom=False)
        out = io.StringIO()
        figure.savefig(out, format="svg", metadata={"Date": None})
    svg = out.getvalue()
    label = html.escape(f"Timeline of the drill {record['scenario']}", quote=True)
    return svg[svg.index("<svg") :].replace(
        "<svg ", f'<svg role="img" aria-label="{label}" class="chart" ', 1
    )


def _plot_requests(axes: Axes, record: Record, span: int) -> list[Artist]:
    counts: dict[tuple[str, str], list[int]] = defaultdict(lambda: [0] * span)
    for bucket in record["timeline"]:
        second = math.floor(bucket["atS"])
        if 0 <= second < span:
            counts[(bucket["outcome"], bucket["region"])][second] += bucket["count"]
    series = sorted(counts, key=lambda key: _series_rank(key, record["regions"]))
    axes.set_title("Requests per second by outcome and serving region", loc="left", pad=TITLE_PAD)
    axes.set_ylabel("requests per second")
    if not series:
        axes.text(0.5, 0.5, "no requests recorded", transform=axes.transAxes, ha="center", color="#777777")
        return []
    # A step drawing holds each second's count for the whole second; the last value closes the last step.
    seconds = list(range(span + 1))
    layers = [[*counts[key], counts[key][-1]] for key in series]
    polygons = axes.stackplot(seconds, layers, step="post", labels=[_series_label(k, record) for k in series])
    for polygon, (outcome, region) in zip(polygons, series, strict=True):
        colour = FAILED_COLOUR if outcome == "failed" else _region_colour(region, record["regions"])
        polygon.set_gid(f"series-{_slug(outcome)}-{_slug(region)}")
        polygon.set_edgecolor(colour)
        polygon.set_facecolor(to_rgba(colour, 0.85))
        polygon.set_linewidth(0)  # an empty layer would draw its edge along the top of the stack
        # Stripes tell a retried (or a region's failed) answer from a plain one of the same colour.
        if outcome == "retried" or (outcome == "failed" and region != NO_REGION):
            polygon.set_hatch("///" if outcome == "retried" else "xx")
            polygon.set_hatchcolor("white")
    # Headroom above the highest second, where the fault windows are named.
    highest = max(sum(layer[second] for layer in layers) for second in seconds)
    axes.set_ylim(0, max(highest, 1) * 1.22)
    return list(polygons)


def _plot_lag(axes: Axes, record: Record) -> list[Artist]:
    pairs: dict[tuple[str, str], list[tuple[float, float]]] = defaultdict(list)
    for point in sorted(record["lag"], key=lambda p: p["atS"]):
        value = math.nan if point["lagMs"] is None else point["lagMs"]  # a gap where nothing answered
        pairs[(point["source"], point["destination"])].append((point["atS"], value))
    axes.set_title("Replication lag per pair", loc="left", pad=TITLE_PAD)
    axes.set_ylabel("replication lag (ms)")
    axes.set_xlabel("seconds since the drill started")
    if not pairs:
        axes.text(0.5, 0.5, "no lag sampled", transform=axes.transAxes, ha="center", color="#777777")
        return []
    lines: list[Artist] = []
    ranked = sorted(pairs.items(), key=lambda pair: [_region_rank(r, record["regions"]) for r in pair[0]])
    for index, ((source, destination), points) in enumerate(ranked):
        (line,) = axes.plot(
            [at for at, _ in points],
            [value for _, value in points],
            marker=".",
            markersize=4,
            linewidth=1.4,
            color=_region_colour(source, record["regions"]),
            linestyle=("-", "--", "-.", ":")[index % 4],
            label=" → ".join(_region_name(region, record["regions"]) for region in (source, destination)),
        )
        line.set_gid(f"lag-{_slug(source)}-{_slug(destination)}")
        lines.append(line)
    axes.set_ylim(bottom=0)
    return lines


def _mark_faults(axes: Axes, record: Record, span: int, *, labelled: bool) -> None:
    for index, fault in enumerate(record["faults"], start=1):
        end = span if fault["endS"] is None else fault["endS"]
        # Over the stacked requests, light enough that their colours still show through.
        shade = axes.axvspan(fault["startS"], end, color=FAULT_COLOUR, alpha=0.22, linewidth=0, zorder=2.5)
        shade.set_gid(f"fault-{index}")
        if labelled:
            lifted = "" if fault["endS"] is not None else " (not lifted)"
            axes.annotate(
                f"{fault['name']} {fault['target']}{lifted}",
                xy=(fault["startS"], 1.0),
                xycoords=("data", "axes fraction"),
                xytext=(4, -4),
                textcoords="offset points",
                va="top",
                fontsize=8,
                color="#222222",
                bbox={"boxstyle": "round,pad=0.2", "facecolor": "white", "edgecolor": "none", "alpha": 0.85},
                zorder=4,
            )


def _mark_events(axes: Axes, events: list[Event], span: int, *, numbered: bool) -> None:
    """A vertical line per event; above the top chart, its number in the events list."""
    ordered = sorted(events, key=lambda e: e["atS"])
    for index, event in enumerate(ordered, start=1):
        line = axes.axvline(
            event["atS"], color=_event_colour(event["kind"]), linewidth=1.1, linestyle=EVENT_DASH
        )
        line.set_gid(f"event-{index}")
    if not numbered:
        return
    # Events closer than 2 % of the chart share one label ("2, 3"), so numbers never overlap.
    clusters: list[list[int]] = []
    for index, event in enumerate(ordered, start=1):
        if clusters and event["atS"] - ordered[clusters[-1][0] - 1]["atS"] < span * 0.02:
            clusters[-1].append(index)
        else:
            clusters.append([index])
    for cluster in clusters:
        first = ordered[cluster[0] - 1]
        axes.annotate(
            ", ".join(map(str, cluster)),
            xy=(first["atS"], 1.0),
            xycoords=("data", "axes fraction"),
            xytext=(0, 2),
            textcoords="offset points",
            ha="center",
            va="bottom",
            fontsize=8,
            fontweight="bold",
            color=_event_colour(first["kind"]) if len(cluster) == 1 else "#333333",
        )


def _marks_key(record: Record) -> list[Artist]:
    """Legend entries of the fault shading and of each kind of event line."""
    key: list[Artist] = []
    if record["faults"]:
        key.append(Patch(facecolor=FAULT_COLOUR, alpha=0.35, label="fault window"))
    kinds = {event["kind"] for event in record["events"]}
    for kind in sorted(kinds, key=lambda k: (list(EVENT_COLOURS).index(k) if k in EVENT_COLOURS else 99, k)):
        key.append(Line2D([], [], color=_event_colour(kind), linestyle=EVENT_DASH, label=f"{kind} event"))
    return key


def _event_colour(kind: str) -> str:
    return EVENT_COLOURS.get(kind, EVENT_COLOURS["note"])


def _span(record: Record) -> int:
    """Whole seconds the chart covers: the workload, and anything recorded after it."""
    ends = [record["durationS"], 1.0]
    ends += [bucket["atS"] + 1 for bucket in record["timeline"]]
    ends += [event["atS"] for event in record["events"]]
    ends += [point["atS"] for point in record["lag"]]
    ends += [fault["endS"] or fault["startS"] for fault in record["faults"]]
    return math.ceil(max(ends))


def _series_rank(key: tuple[str, str], regions: list[RegionRef]) -> tuple[int, int, str]:
    """Stacking order: ok below, then retried, failed on top; regions in the record's order, none last."""
    outcome, region = key
    outcome_rank = OUTCOME_ORDER.index(outcome) if outcome in OUTCOME_ORDER else len(OUTCOME_ORDER)
    return (outcome_rank, _region_rank(region, regions), region)


def _region_rank(region: str, regions: list[RegionRef]) -> int:
    ids = [r["id"] for r in regions]
    return ids.index(region) if region in ids else len(ids) + (region == NO_REGION)


def _series_label(key: tuple[str, str], record: Record) -> str:
    outcome, region = key
    if region == NO_REGION:
        return f"{OUTCOME_TEXT.get(outcome, outcome)}, no region answered"
    return f"{OUTCOME_TEXT.get(outcome, outcome)}, served by {_region_name(region, record['regions'])}"


def _region_colour(region: str, regions: list[RegionRef]) -> str:
    return REGION_COLOURS[min(_region_rank(region, regions), len(REGION_COLOURS) - 1)]


def _region_name(region: str, regions: list[RegionRef]) -> str:
    return next((r["name"] for r in regions if r["id"] == region), region)


def _slug(text: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "_", text)


def _started(started_at: str) -> str:
    try:
        shown = datetime.fromisoformat(started_at).strftime("%Y-%m-%d %H:%M:%S %Z").strip()
    except ValueError:
        shown = started_at
    return f'<time datetime="{html.escape(started_at)}">{html.escape(shown)}</time>'


def _regions(regions: list[RegionRef]) -> str:
    return ", ".join(
        f"{html.escape(r['flag'])} {html.escape(r['name'])} (<code>{html.escape(r['id'])}</code>)"
        for r in regions
    )


def _verdict(record: Record) -> str:
    checks = record["checks"]
    missed = [check["name"] for check in checks if not check["held"]]
    if record["passed"]:
        text = f"Passed: all {len(checks)} checks held."
    else:
        text = f"Failed: {len(missed)} of {len(checks)} checks did not hold" + (
            f" ({', '.join(missed)})." if missed else "."
        )
    state = "passed" if record["passed"] else "failed"
    return f'<p class="verdict {state}" role="status">{html.escape(text)}</p>'


def _section(title: str, body: str) -> str:
    return f"<section>\n<h2>{html.escape(title)}</h2>\n{body}\n</section>"


def _table(name: str, head: list[str], rows: list[str]) -> str:
    header = "".join(f"<th>{html.escape(cell)}</th>" for cell in head)
    return f'<table class="{name}"><thead><tr>{header}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _timeline(record: Record) -> str:
    return f"""<figure class="timeline">
{timeline_svg(record)}
<figcaption>Requests per second by outcome and serving region (stacked), fault windows shaded, events
as numbered vertical lines (see the list below), and the replication lag of each pair.</figcaption>
</figure>"""


def _params(params: dict[str, object]) -> str:
    rows = "".join(
        f"<tr><th scope='row'>{html.escape(str(key))}</th><td>{html.escape(str(value))}</td></tr>"
        for key, value in params.items()
    )
    return f'<table class="params"><tbody>{rows}</tbody></table>'


def _checks(checks: list[Check]) -> str:
    rows = [
        f"<tr class='{'held' if c['held'] else 'not-held'}'><td>{html.escape(c['name'])}</td>"
        f"<td class='num'>{html.escape(number(c['value'], c['unit']))}</td><td>{html.escape(c['goal'])}</td>"
        f"<td class='mark'>{'✓ held' if c['held'] else '✗ not held'}</td>"
        f"<td class='detail'>{html.escape(c['detail'])}{_listed(c)}</td></tr>"
        for c in checks
    ]
    return _table("checks", ["Check", "Value", "Goal", "Held", "Detail"], rows)


def _listed(check: Check) -> str:
    """What the check found wrong, one item a line, folded away under its count."""
    items = check.get("listed") or []
    if not items:
        return ""
    lines = "".join(f"<li>{html.escape(item)}</li>" for item in items)
    return f"<details class='listed'><summary>{len(items)} listed</summary><ul>{lines}</ul></details>"


def _kinds(kinds: list[KindSummary]) -> str:
    rows = [
        "<tr>" + "".join(f"<td>{html.escape(cell)}</td>" for cell in kind_cells(kind)) + "</tr>"
        for kind in kinds
    ]
    return _table("kinds", ["Kind", "Requests", "Failed", "RTO", "p50", "p99"], rows)


def _faults(record: Record) -> str:
    if not record["faults"]:
        return "<p>No fault was injected.</p>"
    rows = [
        f"<tr><td>{html.escape(f['name'])}</td><td><code>{html.escape(f['target'])}</code></td>"
        f"<td>{html.escape(number(f['startS'], 's'))}</td>"
        f"<td>{html.escape('not lifted' if f['endS'] is None else number(f['endS'], 's'))}</td></tr>"
        for f in record["faults"]
    ]
    return _table("faults", ["Fault", "Target", "From", "To"], rows)


def _events(events: list[Event]) -> str:
    if not events:
        return "<p>Nothing notable was recorded.</p>"
    items = "".join(
        f"<li class='event {_slug(e['kind'])}'><span class='at'>{html.escape(number(e['atS'], 's'))}</span> "
        f"<span class='kind'>{html.escape(e['kind'])}</span> {html.escape(e['message'])}</li>"
        for e in sorted(events, key=lambda e: e["atS"])
    )
    return f'<ol class="events">{items}</ol>'


STYLE = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; color: #1d1d1f; margin: 0 auto;
       max-width: 1180px; padding: 1.5rem; }
h1 { margin: 0 0 .3rem; font-size: 1.6rem; }
h2 { font-size: 1.15rem; margin: 1.8rem 0 .6rem; }
code { font: .92em ui-monospace, monospace; }
.description { margin: 0; font-size: 1.05rem; }
.meta { color: #555; margin: .3rem 0 0; }
.verdict { font-size: 1.15rem; font-weight: 600; padding: .8rem 1rem; border-radius: 6px; margin: 1.2rem 0; }
.verdict.passed { background: #e6f4ea; color: #1e6b34; border: 1px solid #9fd3ad; }
.verdict.failed { background: #fdecea; color: #a31515; border: 1px solid #f1a8a3; }
table { border-collapse: collapse; width: 100%; }
th, td { text-align: left; padding: .35rem .6rem; border-bottom: 1px solid #e3e3e3; vertical-align: top; }
thead th { background: #f5f5f7; font-weight: 600; }
table.params { width: auto; }
table.kinds :is(td, th):not(:first-child) { text-align: right; }
table.kinds td, td.num { font-variant-numeric: tabular-nums; }
tr.held .mark { color: #1e6b34; font-weight: 600; }
tr.not-held { background: #fff5f4; }
tr.not-held .mark { color: #b00020; font-weight: 600; }
td.detail { color: #555; font-size: .92em; }
details.listed ul { margin: .3rem 0 0; padding-left: 1.2rem; }
figure.timeline { margin: 0; }
figure.timeline svg { display: block; width: 100%; height: auto; }
figcaption { color: #555; font-size: .9em; margin-top: .4rem; }
ol.events { padding-left: 2rem; }
ol.events .at { display: inline-block; min-width: 4rem; font-variant-numeric: tabular-nums; color: #555; }
ol.events .kind { display: inline-block; min-width: 6.5rem; font-weight: 600; }
footer { margin-top: 2rem; color: #555; font-size: .9em; }
"""
