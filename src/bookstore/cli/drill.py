"""`bookstore drill`: run a failover drill and print its summary (or its record as JSON)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from bookstore.cli import render
from bookstore.cli.exits import fail
from bookstore.cli.options import DataDir, TopologyFile
from bookstore.extras import MissingExtra, require


def drill(
    scenario: Annotated[
        str,
        typer.Argument(help="region-outage, api-break, partition, slow-link, clock-skew or blog-failover."),
    ],
    rate: Annotated[float, typer.Option("--rate", min=1, help="Requests per second of the workload.")] = 40.0,
    duration: Annotated[float, typer.Option("--duration", min=5, help="Seconds of workload.")] = 30.0,
    write_rate: Annotated[
        float,
        typer.Option(
            "--write-rate",
            min=0,
            help="Orders per second written straight to the home region's API besides the shoppers "
            "(a backend's writes, not failed over): they count in RPO, loss, duplicates, best sellers.",
        ),
    ] = 0.0,
    attach: Annotated[
        bool, typer.Option("--attach", help="Drill the running system instead of starting a fresh one.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workload's random choices.")] = 1,
    settle: Annotated[
        float, typer.Option("--settle", min=1, help="Most seconds to wait for convergence after the fault.")
    ] = 30.0,
    regions: Annotated[
        int | None,
        typer.Option(
            "--regions",
            min=2,
            help="Start this many regions (the topology's first N, the home region first) instead of its "
            "active ones: 2 or 3 with the default topology (with --attach: as many as run).",
        ),
    ] = None,
    rto_window: Annotated[
        float,
        typer.Option(
            "--rto-window",
            min=0.1,
            help="Seconds without a failed request of a kind after which that kind has recovered.",
        ),
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Run a failover drill through the edge and check RTO, RPO, loss, duplicates and convergence.

    Progress goes to stderr while it runs; the summary (or the record with --json) to stdout.
    """
    from bookstore.drills.runner import Options, run
    from bookstore.drills.scenarios import SCENARIOS
    from bookstore.runtime.tls import TlsMaterialError

    if scenario not in SCENARIOS:
        fail(f"unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}", 2)
    try:
        require("matplotlib", "the drill's HTML report (its charts)")
    except MissingExtra as exc:
        typer.echo(f"warning: {exc.message}; this drill writes its record.json only", err=True)
    options = Options(
        scenario, rate, duration, attach, data_dir, topology, seed, settle, write_rate,
        regions=regions, rto_window_s=rto_window, progress=lambda line: typer.echo(line, err=True),
    )  # fmt: skip
    try:
        record = run(options)
    except (RuntimeError, TlsMaterialError) as exc:
        fail(str(exc), 2)
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        render.drill_summary(record)
    raise typer.Exit(0 if record["passed"] else 1)
