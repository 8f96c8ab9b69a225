"""`bookstore config show`: the effective topology and where each value came from (default, file, env)."""

from __future__ import annotations

import json
from typing import Any
from urllib.parse import urlsplit

import typer

from bookstore.cli.options import AsJson, TopologyFile, load_topology

app = typer.Typer(help="The topology this command line and `bookstore up` use.", no_args_is_help=True)


@app.command("show")
def config_show(topology: TopologyFile = None, as_json: AsJson = False) -> None:
    """Print every setting of the effective topology and its source: default, file or env:VARIABLE."""
    from bookstore.config import load_with_sources

    load_topology(topology)  # refuses a bad file or variable with its message, as every command does
    loaded = load_with_sources(topology)
    values = _flat(loaded.topology.model_dump(mode="json"))
    if as_json:
        document = {
            "file": str(topology) if topology else None,
            "settings": [{"key": k, "value": values[k], "source": s} for k, s in loaded.sources.items()],
        }
        typer.echo(json.dumps(document, indent=2, ensure_ascii=False))
        return
    typer.echo(f"# topology file: {topology or 'none (defaults)'}")
    for key, source in loaded.sources.items():
        typer.echo(f"{key} = {json.dumps(values[key], ensure_ascii=False)}  # {source}")


def _flat(data: dict[str, Any], where: str = "") -> dict[str, Any]:
    """Nested tables as dotted keys, a list of tables as key[i]; secrets masked."""
    flat: dict[str, Any] = {}
    for key, value in data.items():
        path = f"{where}.{key}" if where else key
        if isinstance(value, dict):
            flat.update(_flat(value, path))
        elif isinstance(value, list) and value and all(isinstance(v, dict) for v in value):
            for index, item in enumerate(value):
                flat.update(_flat(item, f"{path}[{index}]"))
        flat[path] = _masked(key, value)
    return flat


def _masked(key: str, value: Any) -> Any:
    """A secret's value hidden: the S3 secret key, the password in a DSN."""
    if key == "secret_access_key" and value:
        return "***"
    if key.endswith("dsn") and isinstance(value, str):
        parts = urlsplit(value)
        if parts.password:
            return value.replace(f":{parts.password}@", ":***@", 1)
    return value
