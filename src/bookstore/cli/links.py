"""`bookstore link`: cut, heal, slow and show the links between regions (through the control API)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, Any

import typer

from bookstore.cli import render
from bookstore.cli.control import control
from bookstore.cli.options import AsJson, DataDir, TopologyFile

app = typer.Typer(help="Cut, heal and slow the links between regions.", no_args_is_help=True)

OneWay = Annotated[bool, typer.Option("--one-way", help="Only the direction A -> B.")]
A = Annotated[str, typer.Argument(help="One region of the link, e.g. eu-west-1.")]
B = Annotated[str, typer.Argument(help="The other region of the link, e.g. ap-southeast-1.")]


def _links(links: list[dict[str, Any]], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(links, indent=2))
    elif not links:
        typer.echo('no simulated links: the regions reach each other directly (links = "direct")')
    else:
        render.links(links)


@app.command("cut")
def link_cut(
    a: A,
    b: B,
    one_way: OneWay = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Cut the link between two regions (both directions unless --one-way): nothing crosses it."""
    body = {"cut": True, "both": not one_way}
    _links(control(topology, data_dir, "POST", f"/links/{a}/{b}", body)["links"], as_json)


@app.command("heal")
def link_heal(
    a: A,
    b: B,
    one_way: OneWay = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Heal a cut link; held traffic flows again."""
    body = {"cut": False, "both": not one_way}
    _links(control(topology, data_dir, "POST", f"/links/{a}/{b}", body)["links"], as_json)


@app.command("set")
def link_set(
    a: A,
    b: B,
    delay_ms: Annotated[float | None, typer.Option("--delay-ms", help="One-way delay, milliseconds.")] = None,
    jitter_ms: Annotated[
        float | None, typer.Option("--jitter-ms", help="Random extra delay up to this, milliseconds.")
    ] = None,
    loss: Annotated[
        float | None, typer.Option("--loss", help="Probability 0..1 that a chunk is lost.")
    ] = None,
    one_way: OneWay = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Change a link's one-way delay, jitter or loss."""
    body: dict[str, object] = {"both": not one_way}
    for name, value in (("delayMs", delay_ms), ("jitterMs", jitter_ms), ("loss", loss)):
        if value is not None:
            body[name] = value
    _links(control(topology, data_dir, "POST", f"/links/{a}/{b}", body)["links"], as_json)


@app.command("show")
def link_show(
    topology: TopologyFile = None, data_dir: DataDir = Path("data"), as_json: AsJson = False
) -> None:
    """Every link's state."""
    _links(control(topology, data_dir, "GET", "/links")["links"], as_json)
