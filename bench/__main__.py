"""`python -m bench [module ...]`: run benchmark modules, write their figures to docs/performance.md."""

from __future__ import annotations

import argparse
import importlib
import sys
import time
import traceback
from collections.abc import Callable
from dataclasses import replace
from pathlib import Path

from bench.curves import curves_of, draw
from bench.report import BenchError, Figure, Goal, Machine, PartialResult, Section, render, write

# Every benchmark module, in the order they run; each has `run_bench() -> Section`. Add new ones here.
MODULES: tuple[str, ...] = (
    "api",
    "replication",
    "antientropy",
    "backlog",
    "regions",
    "objects",
    "bucket_scale",
    "blog",
    "edge",
    "durability",
    "limits",
    "catalog",
)

DOC = Path(__file__).resolve().parent.parent / "docs" / "performance.md"
# Issue 16: the whole of `make bench` runs within 30 minutes on the 2-core machine it is measured on.
FULL_RUN_GOAL_MIN = 30.0
# Where the curves' SVGs go, beside the document they are shown in.
PLOTS = "plots"


def summary(error: str) -> str:
    """The first and last lines of an error: enough for the document, the rest goes to stderr."""
    lines = [line.strip() for line in error.splitlines() if line.strip()] or ["no message"]
    return lines[0] if len(lines) == 1 else f"{lines[0]} ... {lines[-1]}"


def run_time(durations: dict[str, float], *, full: bool) -> Section:
    """How long each module took, and the whole run against its goal when every module ran."""
    total = sum(durations.values()) / 60
    figures = [Figure(f"Run time: {name}", seconds, "s") for name, seconds in durations.items()]
    figures.append(
        Figure(
            "Run time: every module" if full else "Run time: the modules run",
            total,
            "min",
            Goal.maximum(FULL_RUN_GOAL_MIN) if full else None,
        )
    )
    return Section(
        "run_time",
        "Run time",
        figures,
        method="Wall time of each module, from its start to its report (including its set-up and "
        "tear-down), one after the other in one process; a module that failed counts the time it took.",
    )


def with_plots(section: Section, root: Path) -> Section:
    """`section` with its curves drawn under `root`/plots (bench.curves) and shown in the document."""
    plots = []
    for curve in curves_of(section):
        draw(curve, root / PLOTS / curve.file_name)
        plots.append((curve.spec.title, f"{PLOTS}/{curve.file_name}"))
    return replace(section, plots=plots)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m bench", description=__doc__)
    parser.add_argument(
        "modules", nargs="*", metavar="module", help=f"any of {', '.join(MODULES)}; default all"
    )
    parser.add_argument(
        "--out",
        type=Path,
        help=f"where to write the report; default {DOC.relative_to(DOC.parent.parent)} for a full run. "
        "A run of some modules only prints its table unless --out is given, so the document always "
        "holds figures of one and the same run.",
    )
    args = parser.parse_args(argv)
    chosen: list[str] = args.modules or list(MODULES)
    unknown = [m for m in chosen if m not in MODULES]
    if unknown:
        parser.error(f"unknown module {', '.join(unknown)}; known: {', '.join(MODULES)}")
    out: Path | None = args.out if args.out else (DOC if chosen == list(MODULES) else None)

    machine = Machine.describe()
    sections: list[Section] = []
    failures: list[str] = []
    durations: dict[str, float] = {}
    for name in chosen:
        started = time.monotonic()
        print(f"bench: {name} ...", file=sys.stderr, flush=True)
        run: Callable[[], Section] = importlib.import_module(f"bench.{name}").run_bench
        try:
            sections.append(run())
        except PartialResult as exc:
            sections.append(exc.section)
            print(exc, file=sys.stderr)
            failures += [f"{name}: {summary(reason)}" for reason in exc.reasons]
        except BenchError as exc:
            print(exc, file=sys.stderr)
            failures.append(f"{name}: {summary(str(exc))}")
        except Exception as exc:
            traceback.print_exc()
            failures.append(f"{name}: {type(exc).__name__}: {summary(str(exc))}")
        durations[name] = time.monotonic() - started
        print(f"bench: {name} done in {durations[name]:.0f} s", file=sys.stderr, flush=True)
    sections.append(run_time(durations, full=chosen == list(MODULES)))

    if out is not None:
        sections = [with_plots(section, out.parent) for section in sections]
    text = render(machine, sections, failures)
    print(text)
    if out is not None:
        write(out, text)
        print(f"bench: wrote {out}", file=sys.stderr)
    for line in failures:
        print(f"bench: FAILED {line}", file=sys.stderr)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
