"""Figures measured by the benchmarks, their goals, and the docs/performance.md they are written into."""

from __future__ import annotations

import datetime as dt
import math
import os
import platform
import re
import shutil
import subprocess
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

# Every figure in the document comes from this command, so a reader can reproduce all of them at once.
COMMAND = "make bench"


class BenchError(RuntimeError):
    """A benchmark could not produce a trustworthy figure (tool missing, errors under load, bad output)."""


@dataclass(frozen=True)
class Goal:
    """A bound a figure should meet: `value >= bound` (at_least) or `value <= bound` (at_most)."""

    bound: float
    at_least: bool = True

    @classmethod
    def minimum(cls, bound: float) -> Goal:
        return cls(bound, at_least=True)

    @classmethod
    def maximum(cls, bound: float) -> Goal:
        return cls(bound, at_least=False)

    def met(self, value: float) -> bool:
        if math.isnan(value):
            return False
        return value >= self.bound if self.at_least else value <= self.bound

    def __str__(self) -> str:
        return f"{'>=' if self.at_least else '<='} {format_number(self.bound)}"


@dataclass(frozen=True)
class Figure:
    """One measured figure: what, how much, which goal it has (if any), and how it was produced."""

    name: str
    value: float
    unit: str
    goal: Goal | None = None
    command: str = COMMAND
    note: str = ""

    @property
    def verdict(self) -> str:
        if self.goal is None:
            return ""
        return "met" if self.goal.met(self.value) else "MISSED"


@dataclass(frozen=True)
class Section:
    """The figures of one benchmark module, with what it measured and how (shown under the table)."""

    module: str
    title: str
    figures: Sequence[Figure]
    method: str = ""
    context: dict[str, str] = field(default_factory=dict)
    # Plots of the section's curves (bench.curves): (title, path relative to the document), shown first.
    plots: Sequence[tuple[str, str]] = ()


class PartialResult(BenchError):
    """Some figures of a module were measured and others failed: carries both to the report."""

    def __init__(self, section: Section, reasons: Sequence[str]) -> None:
        super().__init__("\n".join(reasons))
        self.section = section
        self.reasons = tuple(reasons)


def format_number(value: float) -> str:
    if math.isnan(value):
        return "n/a"
    if value == 0:
        return "0"
    magnitude = abs(value)
    if magnitude >= 1000:
        return f"{value:,.0f}"
    if magnitude >= 100:
        return f"{value:.0f}"
    if magnitude >= 10:
        return f"{value:.1f}"
    if magnitude >= 1:
        return f"{value:.2f}"
    return f"{value:.3g}"


def _cell(text: str) -> str:
    # A pipe would split the markdown cell.
    return text.replace("|", "\\|").replace("\n", " ")


def cpu_model() -> str:
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()


def tool_version(argv: Sequence[str]) -> str:
    if shutil.which(argv[0]) is None:
        return "not installed"
    try:
        done = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=False)
    except (OSError, subprocess.TimeoutExpired):
        return "unknown"
    lines = (done.stdout + done.stderr).strip().splitlines()
    return lines[0].strip() if lines else "unknown"


@dataclass(frozen=True)
class Machine:
    """Where the figures were measured; ratios travel between machines, absolute figures do not."""

    cpus: int
    cpu_model: str
    kernel: str
    python: str
    load_before: tuple[float, float, float]
    date: str

    @classmethod
    def describe(cls) -> Machine:
        return cls(
            cpus=os.cpu_count() or 1,
            cpu_model=cpu_model(),
            kernel=f"{platform.system()} {platform.release()}",
            python=platform.python_version(),
            load_before=os.getloadavg(),
            date=dt.datetime.now(dt.UTC).strftime("%Y-%m-%d %H:%M UTC"),
        )


def render(machine: Machine, sections: Sequence[Section], failures: Sequence[str] = ()) -> str:
    """The whole of docs/performance.md: one table of figures, then the machine and each method."""
    out: list[str] = [
        "# Performance",
        "",
        f"Measured by `{COMMAND}` on {machine.date}. Every figure below comes from that one run, so the",
        "ratios compare figures taken on the same machine under the same conditions. Regenerate the file",
        f"with `{COMMAND}`; do not edit it by hand.",
        "",
        "| Figure | Value | Goal | Verdict | Command |",
        "|---|---:|---|---|---|",
    ]
    for section in sections:
        for f in section.figures:
            value = f"{format_number(f.value)} {f.unit}".strip()
            goal = f"{f.goal} {f.unit}".strip() if f.goal else ""
            out.append(f"| {_cell(f.name)} | {_cell(value)} | {_cell(goal)} | {f.verdict} | `{f.command}` |")
    if failures:
        out += ["", "Benchmarks that did not produce figures in this run:", ""]
        out += [f"- {_cell(line)}" for line in failures]
    load = ", ".join(f"{x:.2f}" for x in machine.load_before)
    out += [
        "",
        "## Machine",
        "",
        f"- CPUs (nproc): {machine.cpus}",
        f"- CPU model: {machine.cpu_model}",
        f"- Kernel: {machine.kernel}",
        f"- Python: {machine.python}",
        f"- Load average before the run (1, 5, 15 min): {load}",
        f"- Date: {machine.date}",
    ]
    for section in sections:
        out += ["", f"## {section.title}", ""]
        for title, plot in section.plots:
            out += [f"![{title}]({plot})", ""]
        if section.method:
            out += [section.method.strip(), ""]
        for key, val in section.context.items():
            out.append(f"- {key}: {val}")
        notes = [f for f in section.figures if f.note]
        if notes:
            if section.context:
                out.append("")
            out += ["Notes per figure:", ""]
            out += [f"- {f.name}: {f.note}" for f in notes]
    return "\n".join(out).rstrip() + "\n"


SEPARATE_RUN = "(a separate run)"


def separate_runs(text: str) -> list[str]:
    """The sections of a report whose heading ends with SEPARATE_RUN, each from its heading on."""
    sections = re.split(r"(?m)^(?=## )", text)
    return [
        s.rstrip() + "\n"
        for s in sections
        if s.startswith("## ") and s.split("\n", 1)[0].rstrip().endswith(SEPARATE_RUN)
    ]


def write(path: Path, text: str) -> None:
    """Write the report `text` to `path`, keeping the separate-run sections the file held.

    Those were measured by hand or by a module run alone (see their own text), not by `make bench`:
    a full run replaces its own figures and must not drop them, except a section of the same title.
    """
    path.parent.mkdir(parents=True, exist_ok=True)
    kept = separate_runs(path.read_text(encoding="utf-8")) if path.exists() else []
    # A module measured again by this run replaces its separate run of the same title.
    titles = {line[3:].strip() for line in text.splitlines() if line.startswith("## ")}
    kept = [k for k in kept if k.split("\n", 1)[0][3:].removesuffix(SEPARATE_RUN).strip() not in titles]
    if kept:
        text = text.rstrip() + "\n\n" + "\n".join(kept)
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(text, encoding="utf-8")
    tmp.replace(path)
