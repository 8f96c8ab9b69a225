"""`bookstore tls init|issue`: the deployment's CA and a certificate per host, for TLS between hosts."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, show

app = typer.Typer(
    help="TLS between hosts: the deployment's own CA and each host's certificate ([tls] in the topology).",
    no_args_is_help=True,
)


@app.command("init")
def tls_init(
    data_dir: DataDir = Path("data"),
    days: Annotated[int, typer.Option("--days", min=1, help="How long the CA is valid.")] = 3650,
    replace: Annotated[
        bool, typer.Option("--replace", help="Make a new CA: every host's certificate must be issued again.")
    ] = False,
    as_json: AsJson = False,
) -> None:
    """Make the deployment's CA in DATA_DIR/tls (ca.crt; ca.key 0600, which never leaves this machine)."""
    from bookstore.runtime.certificates import CertificateError, init_ca
    from bookstore.runtime.tls import TLS_DIR

    try:
        cert = init_ca(data_dir / TLS_DIR, days=days, replace=replace)
    except CertificateError as exc:
        fail(str(exc))
    text = f"made the CA {cert}; now a certificate per host: bookstore tls issue --host NAME --ip ADDRESS"
    show(as_json, {"ca": str(cert)}, text)


@app.command("issue")
def tls_issue(
    host: Annotated[
        list[str] | None, typer.Option("--host", help="A DNS name clients reach the host by (repeatable).")
    ] = None,
    ip: Annotated[
        list[str] | None, typer.Option("--ip", help="An address clients reach the host at (repeatable).")
    ] = None,
    out: Annotated[
        Path | None,
        typer.Option("--out", file_okay=False, help="Write here; default: DATA_DIR/tls/hosts/<first name>."),
    ] = None,
    data_dir: DataDir = Path("data"),
    days: Annotated[int, typer.Option("--days", min=1, help="How long the certificate is valid.")] = 825,
    as_json: AsJson = False,
) -> None:
    """Issue a host's certificate (its names and addresses as SANs) signed by the CA in DATA_DIR/tls.

    Writes host.crt, host.key (0600) and ca.crt into one directory: copy it to the host's
    DATA_DIR/tls over a secure channel, as with `bookstore secrets export|import`.
    """
    from bookstore.runtime.certificates import CertificateError, issue
    from bookstore.runtime.tls import TLS_DIR

    names, addresses = tuple(host or ()), tuple(ip or ())
    target = out or data_dir / TLS_DIR / "hosts" / (names or addresses or ("host",))[0]
    try:
        issued = issue(data_dir / TLS_DIR, target, names=names, addresses=addresses, days=days)
    except CertificateError as exc:
        fail(str(exc), 2)
    document = {
        "cert": str(issued.cert),
        "key": str(issued.key),
        "ca": str(issued.ca),
        "names": list(issued.names),
        "addresses": list(issued.addresses),
        "notAfter": issued.not_after.isoformat(),
    }
    text = (
        f"issued {issued.cert} for {', '.join(names + addresses)} (until {issued.not_after:%Y-%m-%d}); "
        f"copy {target} to that host's DATA_DIR/{TLS_DIR}"
    )
    show(as_json, document, text)
