"""The curves `make bench` draws: read off the run's figures, one SVG each, shown in the document."""

from __future__ import annotations

import math
import re
from pathlib import Path

import pytest
from bench.curves import CURVES, curves_of, draw, size_label, size_of
from bench.report import Figure, Goal, Machine, Section, render

DOC = Path(__file__).resolve().parents[2] / "docs" / "performance.md"


def lag(regions: int, pair: str, ms: float) -> Figure:
    return Figure(
        f"{regions} regions, 500 writes/s into eu-west-1: lag p99 {pair}", ms, "ms", Goal.maximum(105)
    )


def test_sizes_parse_as_the_figures_write_them() -> None:
    assert [size_of(s) for s in ("5", "10,000", "100k", "1M")] == [5, 10_000, 100_000, 1_000_000]
    with pytest.raises(ValueError):
        size_of("ten")
    assert [size_label(x) for x in (5, 56, 10_000, 1_110_000, 1_000_000)] == ["5", "56", "10k", "1110k", "1M"]


def test_a_series_takes_the_worst_pair_at_each_size_and_the_shared_goal() -> None:
    section = Section(
        "regions",
        "Regions",
        [
            lag(2, "eu-west-1 -> ap-southeast-1", 100),
            lag(3, "eu-west-1 -> ap-southeast-1", 107),
            lag(3, "eu-west-1 -> us-east-1", 110),
            lag(5, "eu-west-1 -> us-east-1", math.nan),  # not measured: no point
            lag(5, "eu-west-1 -> sa-east-1", 132),
            Figure("CPU per replicated write, sender: 5 regions / 2 regions", 1.25, "x"),
        ],
    )
    (curve,) = curves_of(section)
    assert curve.spec.name == "regions-lag"
    assert curve.points == {"writes into eu-west-1": [(2, 100), (3, 110), (5, 132)]}
    assert (curve.goal, curve.unit) == (105, "ms")


def test_a_series_of_one_size_and_another_modules_figures_make_no_curve() -> None:
    assert curves_of(Section("regions", "Regions", [lag(2, "eu-west-1 -> ap-southeast-1", 100)])) == []
    assert curves_of(Section("api", "API", [lag(2, "a -> b", 1), lag(3, "a -> b", 2)])) == []


def test_every_curve_finds_its_figures_in_the_document_make_bench_wrote() -> None:
    """A figure renamed in a module, then measured again, would silently drop its curve: this says so."""
    names = re.findall(r"(?m)^\| ([^|]+?) \| [^|]+ \| [^|]* \| [^|]* \| `make bench` \|$", DOC.read_text())
    for spec in CURVES:
        sizes = {
            size_of(m.group(1))
            for pattern in spec.series.values()
            for name in names
            if (m := re.fullmatch(pattern, name.replace("\\|", "|")))
        }
        assert len(sizes) >= 2, f"{spec.name}: its figures are not in {DOC.name} at two sizes or more"


def test_a_curve_is_drawn_the_same_run_to_run_and_shown_in_its_section(tmp_path: Path) -> None:
    section = Section("regions", "Regions", [lag(n, "a -> b", 90 + n) for n in (2, 3, 5)])
    (curve,) = curves_of(section)
    first, second = tmp_path / "a.svg", tmp_path / "b.svg"
    draw(curve, first)
    draw(curve, second)
    svg = first.read_bytes()
    assert svg.startswith(b"<?xml") and b"<svg" in svg and svg.count(b"<path") > 10
    assert svg == second.read_bytes()
    shown = Section(section.module, section.title, section.figures, plots=[(curve.spec.title, "plots/x.svg")])
    machine = Machine(2, "cpu", "Linux", "3.11", (0.0, 0.0, 0.0), "today")
    assert f"## Regions\n\n![{curve.spec.title}](plots/x.svg)\n" in render(machine, [shown])
