"""Issue 16's curves (regions, table size, backlog, catalog, objects): read off a run's figures, as SVG.

Each curve is declared once here as the figures it is made of (a pattern per series, whose group is the
size), so the modules keep measuring figures only and a curve can never show a value the table does not.
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from bench.report import Figure, Section

# The sizes in figure names: "10,000", "10k", "1M", "5".
_SUFFIX = {"": 1, "k": 1_000, "M": 1_000_000}


def size_of(text: str) -> float:
    """The number a figure's name gives a size: '1,000,000', '100k' and '1M' all parse."""
    match = re.fullmatch(r"([\d,]+)(k|M)?", text.strip())
    if match is None:
        raise ValueError(f"not a size: {text!r}")
    return int(match.group(1).replace(",", "")) * _SUFFIX[match.group(2) or ""]


def size_label(size: float) -> str:
    """A size as an axis shows it: 56, 10k, 1M."""
    for suffix, factor in (("M", 1_000_000), ("k", 1_000)):
        if size >= factor and size % factor == 0:
            return f"{size / factor:g}{suffix}"
    return f"{size:g}"


@dataclass(frozen=True)
class CurveSpec:
    """A plot of one module's figures against a size; each series the largest figure its pattern matches."""

    module: str
    name: str
    title: str
    x_label: str
    y_label: str
    # label -> a regular expression matched against whole figure names; its first group is the size
    series: Mapping[str, str]
    log_x: bool = True


@dataclass(frozen=True)
class Curve:
    """A curve read off a run: its points per series, and the goal its figures share (if one)."""

    spec: CurveSpec
    points: Mapping[str, Sequence[tuple[float, float]]]
    unit: str
    goal: float | None

    @property
    def file_name(self) -> str:
        return f"{self.spec.name}.svg"


CURVES: tuple[CurveSpec, ...] = (
    CurveSpec(
        "regions",
        "regions-lag",
        "Replication lag p99 by number of regions (500 writes/s, link 85 ms)",
        "regions",
        "lag p99, worst pair (ms)",
        {
            "writes into eu-west-1": r"(\d+) regions, 500 writes/s into eu-west-1: lag p99 .*",
            "writes split across every region": r"(\d+) regions, 500 writes/s split across all: lag p99.*",
        },
        log_x=False,
    ),
    CurveSpec(
        "regions",
        "regions-cpu",
        "CPU per replicated write by number of regions",
        "regions",
        "CPU per write (us)",
        {
            "sender (eu-west-1)": r"(\d+) regions, .* into \S+: CPU per replicated write, sender .*",
            "receiver (worst)": r"(\d+) regions, .* into \S+: CPU per replicated write, receiver .*",
        },
        log_x=False,
    ),
    CurveSpec(
        "regions",
        "regions-rss",
        "RSS of the largest region process by number of regions",
        "regions",
        "RSS (MiB)",
        {"largest region": r"(\d+) regions, .* into \S+: RSS of the largest region"},
        log_x=False,
    ),
    CurveSpec(
        "antientropy",
        "antientropy-round",
        "Anti-entropy: CPU of one round by table size",
        "items in the table",
        "CPU per round (ms)",
        {"one round": r"Anti-entropy round, ([\d,]+) items: CPU"},
    ),
    CurveSpec(
        "antientropy",
        "antientropy-rss",
        "Anti-entropy: RSS of the process holding both regions' stores, by table size",
        "items in the table",
        "RSS (MiB)",
        {"both stores open": r"Anti-entropy at ([\d,]+) items: RSS of the process .*"},
    ),
    CurveSpec(
        "antientropy",
        "antientropy-repair",
        "Anti-entropy: time to find and repair divergent items (1M items)",
        "divergent items",
        "time (s)",
        {"find and repair": r"Find and repair ([\d,]+) divergent items? among .*: time"},
    ),
    CurveSpec(
        "backlog",
        "backlog-rate",
        "A restarted region draining a backlog: items applied per second",
        "changes in the backlog",
        "items/s",
        {"drain": r"Backlog of ([\d,]+) changes drained by a restarted region: items/s"},
    ),
    CurveSpec(
        "backlog",
        "backlog-reads",
        "GET /books/{id} p99 on the draining region while it drains",
        "changes in the backlog",
        "p99 (ms)",
        {
            "GET /books/{id}": r"Backlog of ([\d,]+) changes drained .*: GET /books/\{id\} p99 .*",
        },
    ),
    CurveSpec(
        "backlog",
        "backlog-rss",
        "RSS of the region that drained a backlog, once drained",
        "changes in the backlog",
        "RSS (MiB)",
        {"draining region": r"Backlog of ([\d,]+) changes drained by a restarted region: RSS of .*"},
    ),
    CurveSpec(
        "catalog",
        "catalog-p99",
        "Catalog and history size: p99 latency by number of books",
        "books in the catalog",
        "p99 (ms)",
        {
            "category listing": r"([\d,]+) books: GET /books\?category=Cookbooks&limit=100: p99",
            "search (distinct queries)": r"([\d,]+) books: GET /search, distinct queries \(not cached\): p99",
            "search by author": r"([\d,]+) books: GET /search\?q=<author>: p99",
            "GET /books/{id}": r"([\d,]+) books: GET /books/\{id\}: p99",
            "orders, first page": r"([\d,]+) books: GET /orders\?limit=100 \(first page\): p99",
        },
    ),
    CurveSpec(
        "catalog",
        "catalog-rss",
        "Catalog and history size: region RSS after the runs",
        "books in the catalog",
        "RSS (MiB)",
        {"region": r"([\d,]+) books: region RSS after the runs"},
    ),
    CurveSpec(
        "bucket_scale",
        "objects-list-p99",
        "ListObjectsV2 page p99 by objects in the bucket",
        "objects in the bucket",
        "p99 (ms)",
        {
            "first page": r"ListObjectsV2 first page, (\d+[kM]) objects: p99",
            "middle page": r"ListObjectsV2 middle page \(continuation token\), (\d+[kM]) objects: p99",
            "prefix page": r"ListObjectsV2 prefix page \(Prefix p7/\), (\d+[kM]) objects: p99",
            "delimiter page": r"ListObjectsV2 delimiter page \(Delimiter /\), (\d+[kM]) objects: p99",
        },
    ),
    CurveSpec(
        "bucket_scale",
        "objects-rss",
        "Region RSS by objects in a bucket",
        "objects in the bucket",
        "RSS (MiB)",
        {"region": r"Region process RSS with (\d+[kM]) objects in a bucket"},
    ),
)


def curves_of(section: Section, specs: Sequence[CurveSpec] = CURVES) -> list[Curve]:
    """The curves of `section`'s module that its figures give at least two sizes of."""
    out = []
    for spec in (s for s in specs if s.module == section.module):
        points: dict[str, list[tuple[float, float]]] = {}
        matched: list[Figure] = []
        for label, pattern in spec.series.items():
            worst: dict[float, float] = {}
            for figure in section.figures:
                match = re.fullmatch(pattern, figure.name)
                if match is None or figure.value != figure.value:  # NaN: not measured
                    continue
                x = size_of(match.group(1))
                worst[x] = max(worst.get(x, figure.value), figure.value)
                matched.append(figure)
            if len(worst) >= 2:
                points[label] = sorted(worst.items())
        if not points:
            continue
        goals = {(f.goal.bound, f.goal.at_least) for f in matched if f.goal is not None}
        goal = next(iter(goals))[0] if len(goals) == 1 else None
        out.append(Curve(spec, points, matched[0].unit, goal))
    return out


def draw(curve: Curve, path: Path) -> None:
    """Write `curve` as an SVG at `path`: one line per series, the goal dashed, the same bytes run to run."""
    # Imported here: only a run that writes the document draws (matplotlib is the dev extra's).
    from matplotlib import rc_context
    from matplotlib.figure import Figure as Canvas

    style = {
        "svg.fonttype": "path",
        "svg.hashsalt": "bookstore-bench",
        "text.parse_math": False,
        "font.size": 9,
    }
    with rc_context(style):  # type: ignore[arg-type]
        canvas = Canvas(figsize=(6.4, 3.6))
        axes = canvas.add_subplot()
        for label, points in curve.points.items():
            xs, ys = zip(*points, strict=True)
            axes.plot(xs, ys, marker="o", label=label)
        if curve.goal is not None:
            axes.axhline(
                curve.goal, color="#d62728", linestyle="--", linewidth=1, label=f"goal {curve.goal:g}"
            )
        if curve.spec.log_x:
            axes.set_xscale("log")
            axes.minorticks_off()
        sizes = sorted({x for points in curve.points.values() for x, _ in points})
        axes.set_xticks(sizes, [size_label(x) for x in sizes])
        axes.set_ylim(bottom=0)
        axes.set_title(curve.spec.title)
        axes.set_xlabel(curve.spec.x_label)
        axes.set_ylabel(curve.spec.y_label)
        axes.grid(True, alpha=0.3)
        axes.legend(fontsize=8)
        canvas.tight_layout()
        path.parent.mkdir(parents=True, exist_ok=True)
        canvas.savefig(path, format="svg", metadata={"Date": None})
