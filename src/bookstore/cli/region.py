"""`bookstore region`: serve one region (or run it under its host's agent), or kill, stop and start one."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bookstore.cli.control import region_action, require_shared_credentials
from bookstore.cli.exits import fail
from bookstore.cli.options import DataDir, LogFormatOpt, TopologyFile, load_topology, with_log_format
from bookstore.config import Topology

app = typer.Typer(help="Run one region (or its host's agent).", no_args_is_help=True)


@app.command("serve")
def region_serve(
    region: Annotated[str, typer.Option("--region", help="Region id, e.g. eu-west-1.")],
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Serve one region's API on its loopback address until stopped."""
    from bookstore.region.process import serve
    from bookstore.runtime.tls import TlsMaterialError
    from bookstore.storage.local.ownership import DataDirInUse

    topo = _serving(region, data_dir, topology, log_format)
    try:
        serve(topo, region, data_dir)
    except DataDirInUse as exc:
        # Two processes serving one region's directory would undo each other's start-up work.
        fail(exc.message)
    except TlsMaterialError as exc:
        fail(str(exc), 2)


@app.command("agent")
def region_agent(
    region: Annotated[str, typer.Option("--region", help="Region id, e.g. eu-west-1.")],
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    log_format: LogFormatOpt = None,
) -> None:
    """Run this host's region under its agent, which kills and starts it when the operator asks (drills)."""
    from bookstore.runtime.tls import TlsMaterialError, tls_files
    from bookstore.supervisor.agent import serve

    topo = _serving(region, data_dir, topology, log_format)
    if topo.region(region).agent_port is None:
        fail(f"{region} has no agent: set agent_port in its [[regions]] table of the topology", 2)
    try:
        tls_files(topo, data_dir)
    except TlsMaterialError as exc:
        fail(str(exc), 2)
    serve(topo, region, data_dir, topology)


def _serving(region: str, data_dir: Path, topology: Path | None, log_format: Any) -> Topology:
    """The topology a process serving `region` runs on; exits when the region is unknown or the
    deployment's credentials are not here (without a supervisor)."""
    topo = with_log_format(load_topology(topology), log_format)
    try:
        topo.region(region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--region") from None
    require_shared_credentials(topo, data_dir)
    return topo


def _said(region: str, state: Any) -> str:
    return f"{region}: {'running, pid ' + str(state['pid']) if state['running'] else 'not running'}"


app.command("kill")(
    region_action("/regions/{region}/kill", _said, "kill -9 a region's process (a crash: nothing flushed).")
)
app.command("stop")(region_action("/regions/{region}/stop", _said, "Stop a region cleanly (SIGTERM)."))
app.command("start")(
    region_action(
        "/regions/{region}/start", _said, "Start a stopped or killed region; it catches up by replication."
    )
)
