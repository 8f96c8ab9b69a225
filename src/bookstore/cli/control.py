"""Calling the running system's control API (the supervisor) as the operator, from a command."""

from __future__ import annotations

import ssl
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, RegionArg, TopologyFile, load_topology, show
from bookstore.config import Topology


def operator_token(data_dir: Path) -> str:
    """The deployment's operator token; exits (2) with the reason when the data directory has none."""
    from bookstore.runtime.secret import MissingCredential
    from bookstore.runtime.secret import operator_token as read_token

    try:
        return read_token(data_dir)
    except MissingCredential as exc:
        fail(str(exc), 2)


def control(
    topology: Path | None,
    data_dir: Path,
    method: str,
    path: str,
    body: Mapping[str, object] | None = None,
) -> Any:
    """Call the running system's control API with the operator token; a clear message when not running."""
    import httpx

    from bookstore.runtime.operator import control_call

    topo = load_topology(topology)
    if not topo.supervised:
        return _on_region(topo, data_dir, method, path, body)
    url = topo.control_url
    token = operator_token(data_dir)
    try:
        response = control_call(url, token, method, path, body)
    except httpx.HTTPError:
        fail(f"nothing answers at {url}; start the system with `make up` first", 2)
    try:
        data = response.json()
    except ValueError:
        # Not the control API's JSON: another server on its address, or a proxy's error page.
        fail(
            f"{url}{path} answered {response.status_code} with something not JSON: {_excerpt(response.text)}"
        )
    if response.status_code >= 400:
        message = data.get("message") if isinstance(data, dict) else None
        fail(str(message or f"{url}{path} answered {response.status_code}: {_excerpt(response.text)}"))
    return data


def _on_region(
    topo: Topology, data_dir: Path, method: str, path: str, body: Mapping[str, object] | None
) -> Any:
    """Without a supervisor: a fault switch goes to the region itself (signed with the deployment's
    secret); anything else is refused, saying what cannot be done (exit 2)."""
    import asyncio

    import httpx

    from bookstore.domain.errors import BookstoreError
    from bookstore.kernel.clock import SystemClock
    from bookstore.runtime.secret import operator_secret
    from bookstore.runtime.switches import switch_faults, switches_of

    asked = switches_of(method, path, body)
    if asked is None:
        fail(unsupervised(path), 2)
    region_id, switches = asked
    try:
        region = topo.region(region_id)
    except KeyError as exc:
        fail(str(exc.args[0]), 2)
    try:
        secret = operator_secret(data_dir)
    except BookstoreError as exc:
        fail(exc.message, 2)
    try:
        verify = client_tls(topo, data_dir) or True
        return asyncio.run(
            switch_faults(region.api_url, region.id, secret, SystemClock(), switches, verify=verify)
        )
    except httpx.HTTPError:
        fail(f"{region.id} does not answer at {region.api_url}", 2)
    except RuntimeError as exc:
        fail(str(exc))


def require_shared_credentials(topo: Topology, data_dir: Path) -> None:
    """On a topology without a supervisor, exits (2) unless the deployment's credentials are here already.

    A process started by hand would otherwise make credentials of its own at first start, and regions
    holding different secrets refuse each other's every request.
    """
    from bookstore.runtime.secret import missing

    absent = missing(data_dir) if not topo.supervised else []
    if absent:
        fail(
            f"{data_dir.resolve()} holds no {', '.join(absent)} and this topology has no supervisor to make "
            "them: import the deployment's (`bookstore secrets export > FILE` where they are, then "
            "`bookstore secrets import FILE --data-dir ...` here)",
            2,
        )


def client_tls(topo: Topology, data_dir: Path) -> ssl.SSLContext | None:
    """The context this host's clients verify the regions with ([tls] on), else None; exits (2) naming
    the missing CA certificate and how to make it."""
    from bookstore.runtime.tls import TlsMaterialError, client_context

    try:
        return client_context(topo, data_dir)
    except TlsMaterialError as exc:
        fail(str(exc), 2)


def ca_bundle(topo: Topology, data_dir: Path) -> Path | None:
    """The deployment's CA certificate ([tls] on) for clients that take a file (boto3), else None; exits
    (2) as client_tls does when it is missing."""
    from bookstore.runtime.tls import TlsMaterialError, tls_files

    try:
        files = tls_files(topo, data_dir, server=False)
    except TlsMaterialError as exc:
        fail(str(exc), 2)
    return files.ca if files is not None else None


def unsupervised(path: str) -> str:
    """What a command that needs the supervisor says on a topology with none (`supervised = false`)."""
    what = {
        "regions": "start, stop or kill a region: do it on the region's host (`bookstore region serve`, "
        "its service manager, or kill its process; the drills ask its agent, `bookstore region agent`)",
        "links": "cut, heal or slow a link: the regions talk over the real network "
        "(cut it between the hosts)",
        "blog": "promote the blog through it (`bookstore blog promote` asks the regions themselves)",
    }.get(path.strip("/").split("/")[0], "do this")
    return (
        f"this topology has no supervisor (supervised = false; regions run on their own hosts), so there is "
        f"no control API to {what}; `bookstore status` still reads every region"
    )


def _excerpt(text: str, limit: int = 200) -> str:
    """The start of an answer's body on one line, to say what answered."""
    flat = " ".join(text.split())
    return (flat[:limit] + "…") if len(flat) > limit else flat or "(empty body)"


def region_action(path: str, said: Callable[[str, Any], str], doc: str) -> Callable[..., None]:
    """A command `... REGION` that POSTs to the control API's `path` (with {region}) and prints the state it
    answers with (`said(region, state)`, or the state as JSON with --json); `doc` is its help."""

    def command(
        region: RegionArg,
        topology: TopologyFile = None,
        data_dir: DataDir = Path("data"),
        as_json: AsJson = False,
    ) -> None:
        state = control(topology, data_dir, "POST", path.format(region=region))
        show(as_json, state, said(region, state))

    command.__doc__ = doc
    return command
