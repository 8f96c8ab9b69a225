"""The options many commands share (data directory, topology file, region) and loading the topology."""

from __future__ import annotations

import json
import os
from enum import StrEnum
from pathlib import Path
from typing import Annotated, Any

import typer

from bookstore.config import Topology

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="BOOKSTORE_DATA_DIR", help="Where every region keeps its data.")
]
TopologyFile = Annotated[
    Path | None,
    typer.Option(
        "--topology",
        envvar="BOOKSTORE_TOPOLOGY",
        exists=True,
        dir_okay=False,
        help="TOML topology file; BOOKSTORE_<SECTION>__<KEY> variables override it (see `config show`).",
    ),
]
RegionArg = Annotated[str, typer.Argument(help="Region id, e.g. eu-west-1.")]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Region id; default: the home region.")]
AsJson = Annotated[bool, typer.Option("--json", help="Print JSON (one document on stdout).")]
AsJsonNotTable = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]


class LogFormat(StrEnum):
    text = "text"
    json = "json"


LogFormatOpt = Annotated[
    LogFormat | None,
    typer.Option(
        "--log-format",
        help="Log lines as text (for people) or JSON (one object a line, for a collector); default: the "
        "topology's [observability] log_format.",
    ),
]
# The variable that carries --log-format to the processes a command starts (they load the topology).
LOG_FORMAT_ENV = "BOOKSTORE_OBSERVABILITY__LOG_FORMAT"


def with_log_format(topology: Topology, log_format: LogFormat | None) -> Topology:
    """The topology with `--log-format` applied; also set for the child processes this one starts."""
    if log_format is None:
        return topology
    os.environ[LOG_FORMAT_ENV] = log_format.value
    observability = topology.observability.model_copy(update={"log_format": log_format.value})
    return topology.model_copy(update={"observability": observability})


def show(as_json: bool, document: Any, text: str) -> None:
    """Print `document` as JSON with --json, else `text`: what a command prints for a person or a script."""
    typer.echo(json.dumps(document, indent=2, ensure_ascii=False) if as_json else text)


def load_topology(path: Path | None) -> Topology:
    """The topology in `path` (or the default one) with the environment's BOOKSTORE_ overrides.

    A key it does not know or a value it refuses ends the command with what is wrong (exit 2), not a
    traceback.
    """
    from pydantic import ValidationError

    from bookstore.config import explain
    from bookstore.kernel.settings import SettingsError

    try:
        return Topology.load(path)
    except SettingsError as exc:
        problems = exc.problems
    except ValidationError as exc:
        problems = explain(exc, path)
    where = f"the topology {path}" if path is not None else "the topology"
    typer.echo(f"error: {where} is not valid: {'; '.join(problems)}", err=True)
    raise typer.Exit(2) from None
