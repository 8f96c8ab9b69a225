"""`bookstore edge serve`: run the edge process by hand (what `up` runs)."""

from __future__ import annotations

from pathlib import Path

import typer

from bookstore.cli.control import client_tls, require_shared_credentials
from bookstore.cli.options import DataDir, LogFormatOpt, TopologyFile, load_topology, with_log_format

app = typer.Typer(
    help="The edge: one address for the API, the blog and the storefront.", no_args_is_help=True
)


@app.command("serve")
def edge_serve(
    topology: TopologyFile = None, data_dir: DataDir = Path("data"), log_format: LogFormatOpt = None
) -> None:
    """Serve the edge (HTTP and DNS) at the topology's edge address until stopped (what `up` runs)."""
    from bookstore.edge.server import serve
    from bookstore.runtime.secret import deployment_credentials

    topo = load_topology(topology)
    require_shared_credentials(topo, data_dir)
    # `up` hands the edge the deployment's credentials in its environment; by hand, the data dir's.
    serve(with_log_format(topo, log_format), deployment_credentials(data_dir), client_tls(topo, data_dir))
