"""The S3 API from the command line: `aws-env` points the `aws` CLI at a region; `publish` the storefront;
`s3 rotate-key` and `s3 keys` a region's SSE-S3 keys."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any

import typer

from bookstore.cli.control import ca_bundle
from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, RegionOpt, TopologyFile, load_topology, show
from bookstore.config import ObjectStoreAccess, Topology
from bookstore.domain.errors import BookstoreError

if TYPE_CHECKING:
    from bookstore.objectstore.sse_keys import KeyRotation
    from bookstore.region.services import RegionServices
    from bookstore.runtime.commands import RegionCommands


def aws_env(
    region: Annotated[
        str | None, typer.Argument(help="Region whose S3 API to use; default: the home region.")
    ] = None,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Print `export` lines pointing the `aws` CLI and boto3 at a region's S3 API (the deployment's keys)."""
    import shlex
    import shutil

    topo = load_topology(topology)
    try:
        target = topo.region(region or topo.home_region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="REGION") from None
    access = _s3_access(topo, data_dir)
    variables = {
        "AWS_ACCESS_KEY_ID": access.access_key_id,
        "AWS_SECRET_ACCESS_KEY": access.secret_access_key,
        "AWS_DEFAULT_REGION": target.id,
        "AWS_ENDPOINT_URL": target.s3_url,
    }
    ca = ca_bundle(topo, data_dir)
    if ca is not None:
        # The aws CLI and boto3 trust the deployment's CA through it.
        variables["AWS_CA_BUNDLE"] = str(ca.resolve())
    show(as_json, variables, "\n".join(f"export {k}={shlex.quote(v)}" for k, v in variables.items()))
    if shutil.which("aws") is None:
        # The lines are for the aws CLI, which no install of ours brings but the development one.
        typer.echo(
            "note: the aws CLI is not installed: pip install awscli (or use boto3 with them)", err=True
        )


def publish(
    source: Annotated[
        Path | None,
        typer.Option(
            "--source", exists=True, file_okay=False, help="A directory of storefront files to upload too."
        ),
    ] = None,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Upload the storefront's static files (covers, index.html) to the home region's bucket.

    On a topology without a supervisor (`supervised = false`) it first makes every active region's
    storefront bucket and the home bucket's replication, as `up` does on one machine.
    """
    from bookstore.objectstore.setup import prepare_buckets
    from bookstore.objectstore.setup import publish as publish_files

    topo = load_topology(topology)
    access = _s3_access(topo, data_dir)
    ca = ca_bundle(topo, data_dir)
    try:
        if not topo.supervised:
            # No `up` made the storefront's buckets and their replication: this is the step that does.
            prepare_buckets(topo, list(topo.active), access, ca)
        report = publish_files(topo, access, source, ca)
    except BookstoreError as exc:
        fail(exc.message)
    document = {
        "bucket": report.bucket,
        "uploaded": list(report.uploaded),
        "unchanged": list(report.unchanged),
    }
    counts = f"{len(report.uploaded)} uploaded, {len(report.unchanged)} unchanged"
    text = f"published to s3://{report.bucket}: {counts}"
    show(as_json, document, text)


def _s3_access(topo: Topology, data_dir: Path) -> ObjectStoreAccess:
    """The S3 key pair of the deployment in `data_dir` (or the topology's); exits when there is none."""
    from bookstore.runtime.secret import MissingCredential, s3_access

    try:
        return s3_access(topo, data_dir, create=False)
    except MissingCredential as exc:
        fail(str(exc), 2)


def rotate_key(
    region: RegionOpt = None,
    reencrypt: Annotated[
        bool,
        typer.Option(
            "--reencrypt",
            help="Rewrite every body under the new key (in the region's background), then retire the "
            "older keys.",
        ),
    ] = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """Make a new SSE-S3 key for a region's objects: new writes use it, older bodies stay readable.

    After a suspected leak, use --reencrypt: the running region rewrites every body in the background and
    then removes the older keys (`bookstore s3 keys` shows the progress); a region that is not running
    has it done by this command before it returns.
    """

    def local(services: RegionServices) -> dict[str, Any]:
        keys = _keys_of(services)
        status = keys.rotate_key(reencrypt=reencrypt)
        while reencrypt and not keys.reencrypt_step(64).done:
            pass
        return keys.key_status().to_json() if reencrypt else status.to_json()

    target, document = _on_keys(
        topology, region, data_dir, "s3 rotate-key", local, lambda r: r.rotate_key(reencrypt)
    )
    show(as_json, document, f"{target}: new SSE-S3 key {document['newest']}; {_said_keys(document)}")


def keys(
    region: RegionOpt = None,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
    as_json: AsJson = False,
) -> None:
    """A region's SSE-S3 keys, how many bodies each encrypts, and whether a re-encryption is running."""
    target, document = _on_keys(
        topology,
        region,
        data_dir,
        "s3 keys",
        lambda s: _keys_of(s).key_status().to_json(),
        lambda r: r.sse_keys(),
    )
    show(as_json, document, f"{target}: {_said_keys(document)}")


def _keys_of(services: RegionServices) -> KeyRotation:
    if services.sse_keys is None:
        fail(f"{services.region.id} keeps its objects on S3, which rotates its SSE-S3 keys itself")
    return services.sse_keys


def _on_keys(
    topology: Path | None,
    region: str | None,
    data_dir: Path,
    command: str,
    local: Callable[[RegionServices], dict[str, Any]],
    remote: Callable[[RegionCommands], dict[str, Any]],
) -> tuple[str, dict[str, Any]]:
    from bookstore.cli.region_access import on_region

    target = region or load_topology(topology).home_region
    document = on_region(topology, target, data_dir, command, local, remote)
    document.pop("region", None)
    return target, {"region": target, **document}


def _said_keys(document: dict[str, Any]) -> str:
    keys = ", ".join(str(k) for k in document["keys"])
    bodies = ", ".join(
        f"{'in clear' if k == '0' else 'key ' + k}: {n}" for k, n in document["bodies"].items()
    )
    retiring = document.get("retiringBelow")
    state = (
        f"re-encrypting, keys below {retiring} retire when done" if retiring else "no re-encryption pending"
    )
    return f"keys {keys} (newest {document['newest']}); {state}; bodies by key: {bodies or 'none'}"
