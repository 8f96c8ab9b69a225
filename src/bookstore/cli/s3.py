"""The S3 API from the command line: `aws-env` points the `aws` CLI at a region; `publish` the storefront."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from bookstore.cli.exits import fail
from bookstore.cli.options import AsJson, DataDir, TopologyFile, load_topology, show
from bookstore.config import ObjectStoreAccess, Topology
from bookstore.domain.errors import BookstoreError


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
    try:
        if not topo.supervised:
            # No `up` made the storefront's buckets and their replication: this is the step that does.
            prepare_buckets(topo, list(topo.active), access)
        report = publish_files(topo, access, source)
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
