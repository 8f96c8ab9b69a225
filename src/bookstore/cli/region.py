"""`bookstore region`: serve one region, or kill, stop and start a region of the running system."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from bookstore.cli.control import region_action, require_shared_credentials
from bookstore.cli.exits import fail
from bookstore.cli.options import DataDir, LogFormatOpt, TopologyFile, load_topology, with_log_format

app = typer.Typer(help="Run one region.", no_args_is_help=True)


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

    topo = with_log_format(load_topology(topology), log_format)
    try:
        topo.region(region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--region") from None
    require_shared_credentials(topo, data_dir)
    try:
        serve(topo, region, data_dir)
    except DataDirInUse as exc:
        # Two processes serving one region's directory would undo each other's start-up work.
        fail(exc.message)
    except TlsMaterialError as exc:
        fail(str(exc), 2)


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
