"""Calling the running system's control API (the supervisor) as the operator, from a command."""

from __future__ import annotations

from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, RegionArg, TopologyFile, load_topology, show


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

    url = load_topology(topology).control_url
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
