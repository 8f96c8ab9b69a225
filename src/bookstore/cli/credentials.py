"""The deployment's credentials: `secrets rotate|export|import`; `operator-link` signs the operator in."""

from __future__ import annotations

import sys
from pathlib import Path
from typing import Annotated

import typer

from bookstore.cli.control import operator_token
from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, TopologyFile, load_topology, show

secrets_app = typer.Typer(
    help="The deployment's own credentials (S3 keys, inter-region secret, operator token)."
)


@secrets_app.command("rotate")
def secrets_rotate(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="s3, secret or operator-token (repeatable); default: all three."),
    ] = None,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    as_json: AsJson = False,
) -> None:
    """Replace the deployment's credentials with new ones; the system must be stopped and started again."""
    import httpx

    from bookstore.runtime.secret import KINDS, overridden, rotate

    kinds = only or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        fail(f"unknown credential(s) {', '.join(unknown)}; known: {', '.join(KINDS)}", 2)
    url = load_topology(topology).control_url
    try:
        httpx.get(url + "/regions", timeout=2)
    except httpx.HTTPError:
        pass
    else:
        # The running processes hold the old values: regions would stop trusting each other mid-flight.
        fail(f"the system answers at {url}: stop it (Ctrl-C), rotate, then start it again")
    rotated = list(rotate(data_dir, kinds))
    ignored = list(overridden(kinds))
    for name in ignored:
        typer.echo(f"warning: {name} is set in this environment and overrides the file", err=True)
    text = "\n".join(
        [f"new {name} in {data_dir.resolve()}" for name in rotated]
        + ["start the system again (`bookstore up`) to use them; old sign-in links and sessions are void"]
    )
    show(as_json, {"dataDir": str(data_dir.resolve()), "rotated": rotated, "overridden": ignored}, text)


@secrets_app.command("export")
def secrets_export(
    file: Annotated[
        Path | None,
        typer.Argument(help="Write here (mode 0600, must not exist); default: stdout, made 0600 if a file."),
    ] = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Print the deployment's credentials as one document, for `secrets import` on the other hosts.

    Made first if this data directory has none yet (as at first start). Whoever reads it can sign as
    any region and as the operator: copy it over a secure channel and delete it once imported.
    """
    import os
    import stat

    from bookstore.runtime.secret import export_credentials

    document = export_credentials(data_dir)
    if file is not None:
        try:
            fd = os.open(file, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:
            fail(f"{file} exists; remove it or name another file", 2)
        with os.fdopen(fd, "w", encoding="ascii") as f:
            f.write(document)
        typer.echo(f"wrote {file} (mode 0600); on each other host: bookstore secrets import FILE", err=True)
        return
    out = sys.stdout.fileno()
    # `export > FILE`: the shell made FILE with its umask (0644 as a rule); close it to others first.
    if stat.S_ISREG(os.fstat(out).st_mode):
        os.fchmod(out, 0o600)
    sys.stdout.write(document)
    sys.stdout.flush()


@secrets_app.command("import")
def secrets_import(
    file: Annotated[Path, typer.Argument(help="A file `bookstore secrets export` wrote.", dir_okay=False)],
    replace: Annotated[
        bool, typer.Option("--replace", help="Replace credentials this data directory already holds.")
    ] = False,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Put the deployment's credentials (from `secrets export` on another host) into this data directory.

    Run it before the first `region serve` or `edge serve` here, so every host shares one deployment.
    """
    import os
    import stat

    from bookstore.runtime.secret import CredentialsConflict, import_credentials, overridden, parse_export

    try:
        mode = os.stat(file).st_mode
        text = file.read_bytes()
    except OSError as exc:
        fail(f"cannot read {file}: {exc.strerror}", 2)
    if mode & (stat.S_IRWXG | stat.S_IRWXO):
        typer.echo(
            f"warning: {file} is readable by others (mode {stat.S_IMODE(mode):o}); delete it now", err=True
        )
    try:
        held = parse_export(text)
    except ValueError as exc:
        fail(f"{file}: {exc}", 2)
    try:
        written = import_credentials(data_dir, held, replace=replace)
    except CredentialsConflict as exc:
        fail(str(exc))
    for name in overridden():
        typer.echo(f"warning: {name} is set in this environment and overrides the file", err=True)
    where = data_dir.resolve()
    text_out = (
        f"imported {', '.join(written)} into {where}"
        if written
        else f"{where} already holds these credentials"
    )
    show(as_json, {"dataDir": str(where), "written": written}, text_out)


def operator_link(
    data_dir: DataDir = Path("data"), topology: TopologyFile = None, as_json: AsJson = False
) -> None:
    """Print a one-time sign-in link to the operator page (valid for an hour, good for one browser tab)."""
    from bookstore.runtime.operator import login_link

    topo = load_topology(topology)
    if not topo.edge.enabled:
        fail("the edge is disabled in this topology: there is no operator page", 2)
    link = login_link(topo.edge.url, operator_token(data_dir))
    show(as_json, {"url": link}, link)
