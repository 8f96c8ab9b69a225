"""The `bookstore` command: run the system, seed it, manage users.

The composition root of the command line: it builds the typer app from one module per command group.
The order of registration is the order `bookstore --help` lists the commands in.
"""

from __future__ import annotations

import os
import sys
from importlib import metadata
from typing import Annotated

import typer

from bookstore.cli import (
    aws,
    blog,
    config,
    credentials,
    drill,
    edge,
    faults,
    links,
    region,
    s3,
    system,
    tls,
    users,
)

app = typer.Typer(
    help="A multi-region Bookstore you can run, break and measure on one machine.", no_args_is_help=True
)


def _version(shown: bool) -> None:
    if shown:
        typer.echo(f"bookstore {metadata.version('bookstore')}")
        raise typer.Exit()


@app.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option(
            "--version", callback=_version, is_eager=True, help="Print the version of bookstore and exit."
        ),
    ] = False,
) -> None:
    """A multi-region Bookstore you can run, break and measure on one machine."""


app.command()(system.up)
app.command()(system.seed)
app.command()(system.status)
app.command()(drill.drill)
app.command()(system.conflicts)
app.command("aws-env")(s3.aws_env)
app.command()(s3.publish)
app.command("operator-link")(credentials.operator_link)
app.add_typer(region.app, name="region")
app.add_typer(users.app, name="users")
app.add_typer(links.app, name="link")
app.add_typer(edge.app, name="edge")
app.add_typer(faults.api_app, name="api")
faults.s3_app.command("rotate-key")(s3.rotate_key)
faults.s3_app.command("keys")(s3.keys)
app.add_typer(faults.s3_app, name="s3")
app.add_typer(credentials.secrets_app, name="secrets")
app.add_typer(tls.app, name="tls")
app.add_typer(aws.app, name="aws")
app.add_typer(blog.app, name="blog")
app.add_typer(config.app, name="config")


def main() -> None:
    """The console script `bookstore` and `python -m bookstore`."""
    from bookstore.extras import MissingExtra

    if not sys.platform.startswith("linux"):
        # The regions bind 127.0.x.1 addresses (only Linux routes all of 127.0.0.0/8 to loopback) and
        # the supervisor ties its children's lives to its own with prctl.
        typer.echo(f"error: bookstore runs on Linux only (this is {sys.platform})", err=True)
        raise SystemExit(2)
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    try:
        app()
    except MissingExtra as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise SystemExit(2) from None
