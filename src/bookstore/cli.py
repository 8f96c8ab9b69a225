"""The `bookstore` command: run the system, seed it, manage users."""

from __future__ import annotations

import json
import os
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Annotated, Any, TypeVar

import typer

from bookstore.config import Topology
from bookstore.domain.errors import BookstoreError, Unavailable

if TYPE_CHECKING:
    from bookstore.bootstrap import RegionServices
    from bookstore.runtime.commands import RegionCommands

T = TypeVar("T")

app = typer.Typer(
    help="A multi-region Bookstore you can run, break and measure on one machine.", no_args_is_help=True
)
region_app = typer.Typer(help="Run one region.", no_args_is_help=True)
users_app = typer.Typer(help="Manage the user pool.", no_args_is_help=True)
link_app = typer.Typer(help="Cut, heal and slow the links between regions.", no_args_is_help=True)
app.add_typer(region_app, name="region")
app.add_typer(users_app, name="users")
app.add_typer(link_app, name="link")

DataDir = Annotated[
    Path, typer.Option("--data-dir", envvar="BOOKSTORE_DATA_DIR", help="Where every region keeps its data.")
]
TopologyFile = Annotated[
    Path | None,
    typer.Option(
        "--topology", envvar="BOOKSTORE_TOPOLOGY", exists=True, dir_okay=False, help="TOML topology."
    ),
]
RegionOpt = Annotated[str | None, typer.Option("--region", help="Region id; default: the home region.")]


def _topology(path: Path | None) -> Topology:
    return Topology.load(path)


@contextmanager
def _region(
    topology: Path | None, region: str | None, data_dir: Path, command: str
) -> Iterator[RegionServices]:
    """A region's services for one command, owning its data directory; a refusal ends it with its message.

    Raises DataDirInUse (before any start-up work) when a running region owns the directory.
    """
    from bookstore.bootstrap import build_region

    topo = _topology(topology)
    services = build_region(topo, region or topo.home_region, data_dir, holder=f"`bookstore {command}`")
    try:
        yield services
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    finally:
        services.close()


def _command(
    topology: Path | None,
    region: str | None,
    data_dir: Path,
    command: str,
    local: Callable[[RegionServices], T],
    remote: Callable[[RegionCommands], T],
) -> T:
    """Run a command on the region's data directory when nothing owns it, else through the running region.

    Never both: a region that owns its directory is asked over its signed operator endpoint, so the
    command runs none of the owner's start-up work (the object store's sweep) beside it.
    """
    from bookstore.blog.replication import operator_secret
    from bookstore.replication.clock import SystemClock
    from bookstore.runtime.commands import RegionCommands
    from bookstore.storage.local.ownership import DataDirInUse

    try:
        with _region(topology, region, data_dir, command) as services:
            return local(services)
    except DataDirInUse as busy:
        owner = busy
    target = _topology(topology).region(region or _topology(topology).home_region)
    try:
        with RegionCommands(target.id, target.api_url, operator_secret(data_dir), SystemClock()) as client:
            return remote(client)
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        if isinstance(exc, Unavailable):
            typer.echo(f"({owner.message})", err=True)
        raise typer.Exit(1) from None


@app.command()
def up(data_dir: DataDir = Path("data"), topology: TopologyFile = None) -> None:
    """Start the system (seeding the catalog on first use) and keep it running until Ctrl-C."""
    from bookstore.runtime import logs, supervisor
    from bookstore.runtime.secret import deployment_credentials

    topo = _topology(topology)
    logs.configure("supervisor")
    # The deployment's own credentials, made on the first start in this data directory.
    credentials = deployment_credentials(data_dir)
    # As in the original, the catalog is loaded in one region and reaches the others by replication.
    seed(data_dir=data_dir, topology=topology, region=None)
    supervisor.up(topo, data_dir, topology, list(topo.active), credentials)


@app.command()
def seed(data_dir: DataDir = Path("data"), topology: TopologyFile = None, region: RegionOpt = None) -> None:
    """Load the seed catalog into a region (the home region by default); running it again changes nothing."""
    from bookstore.services.catalog import seed_books

    target = region or _topology(topology).home_region
    written = _command(
        topology,
        target,
        data_dir,
        "seed",
        lambda services: services.catalog.load(seed_books()),
        lambda running: running.seed(),
    )
    typer.echo(f"seeded {target}: {written} book(s) written")


@region_app.command("serve")
def region_serve(
    region: Annotated[str, typer.Option("--region", help="Region id, e.g. eu-west-1.")],
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Serve one region's API on its loopback address until stopped."""
    from bookstore.runtime.region import serve
    from bookstore.storage.local.ownership import DataDirInUse

    topo = _topology(topology)
    try:
        topo.region(region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="--region") from None
    try:
        serve(topo, region, data_dir)
    except DataDirInUse as exc:
        # Two processes serving one region's directory would undo each other's start-up work.
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


def _operator_token(data_dir: Path) -> str:
    from bookstore.runtime.secret import MissingCredential, operator_token

    try:
        return operator_token(data_dir)
    except MissingCredential as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


def _control(
    topology: Path | None,
    data_dir: Path,
    method: str,
    path: str,
    body: Mapping[str, object] | None = None,
) -> Any:
    """Call the running system's control API with the operator token; a clear message when not running."""
    import httpx

    from bookstore.runtime.control import control_call

    url = _topology(topology).control_url
    token = _operator_token(data_dir)
    try:
        response = control_call(url, token, method, path, body)
    except httpx.HTTPError:
        typer.echo(f"error: nothing answers at {url}; start the system with `make up` first", err=True)
        raise typer.Exit(2) from None
    data = response.json()
    if response.status_code >= 400:
        typer.echo(f"error: {data.get('message', response.text)}", err=True)
        raise typer.Exit(1)
    return data


def _region_action(action: str, region: str, topology: Path | None, data_dir: Path) -> None:
    state = _control(topology, data_dir, "POST", f"/regions/{region}/{action}")
    typer.echo(f"{region}: {'running, pid ' + str(state['pid']) if state['running'] else 'not running'}")


@region_app.command("kill")
def region_kill(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """kill -9 a region's process (a crash: nothing flushed)."""
    _region_action("kill", region, topology, data_dir)


@region_app.command("stop")
def region_stop(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """Stop a region cleanly (SIGTERM)."""
    _region_action("stop", region, topology, data_dir)


@region_app.command("start")
def region_start(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """Start a stopped or killed region; it catches up by replication."""
    _region_action("start", region, topology, data_dir)


edge_app = typer.Typer(
    help="The edge: one address for the API, the blog and the storefront.", no_args_is_help=True
)
api_app = typer.Typer(
    help="Break and repair a region's API (module 4's failover drill).", no_args_is_help=True
)
s3_app = typer.Typer(help="Make a region's S3 API unavailable (503) and back.", no_args_is_help=True)
app.add_typer(edge_app, name="edge")
app.add_typer(api_app, name="api")
app.add_typer(s3_app, name="s3")


@edge_app.command("serve")
def edge_serve(topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """Serve the edge (HTTP and DNS) at the topology's edge address until stopped (what `up` runs)."""
    from bookstore.edge.server import serve
    from bookstore.runtime.secret import deployment_credentials

    # `up` hands the edge the deployment's credentials in its environment; by hand, the data dir's.
    serve(_topology(topology), deployment_credentials(data_dir))


def _fault(kind: str, action: str, region: str, topology: Path | None, data_dir: Path) -> None:
    state = _control(topology, data_dir, "POST", f"/{kind}/{region}/{action}")
    applied = "" if state.get("applied", True) else f" ({state.get('message')})"
    typer.echo(f"{region}: api {state['api']}, s3 {state['s3']}{applied}")


@api_app.command("break")
def api_break(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """The region's API answers 403 to everything (its mapping is gone) while its process keeps running."""
    _fault("api", "break", region, topology, data_dir)


@api_app.command("repair")
def api_repair(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """The region's API answers again."""
    _fault("api", "repair", region, topology, data_dir)


@s3_app.command("break")
def s3_break(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """The region's S3 API answers 503 ServiceUnavailable (replication between regions keeps going)."""
    _fault("s3", "break", region, topology, data_dir)


@s3_app.command("repair")
def s3_repair(region: str, topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """The region's S3 API answers again."""
    _fault("s3", "repair", region, topology, data_dir)


OneWay = Annotated[bool, typer.Option("--one-way", help="Only the direction A -> B.")]


@link_app.command("cut")
def link_cut(
    a: str, b: str, one_way: OneWay = False, topology: TopologyFile = None, data_dir: DataDir = Path("data")
) -> None:
    """Cut the link between two regions (both directions unless --one-way): nothing crosses it."""
    body = {"cut": True, "both": not one_way}
    _show_links(_control(topology, data_dir, "POST", f"/links/{a}/{b}", body)["links"])


@link_app.command("heal")
def link_heal(
    a: str, b: str, one_way: OneWay = False, topology: TopologyFile = None, data_dir: DataDir = Path("data")
) -> None:
    """Heal a cut link; held traffic flows again."""
    body = {"cut": False, "both": not one_way}
    _show_links(_control(topology, data_dir, "POST", f"/links/{a}/{b}", body)["links"])


@link_app.command("set")
def link_set(
    a: str,
    b: str,
    delay_ms: Annotated[float | None, typer.Option("--delay-ms")] = None,
    jitter_ms: Annotated[float | None, typer.Option("--jitter-ms")] = None,
    loss: Annotated[
        float | None, typer.Option("--loss", help="Probability 0..1 that a chunk is lost.")
    ] = None,
    one_way: OneWay = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Change a link's one-way delay, jitter or loss."""
    body: dict[str, object] = {"both": not one_way}
    for name, value in (("delayMs", delay_ms), ("jitterMs", jitter_ms), ("loss", loss)):
        if value is not None:
            body[name] = value
    _show_links(_control(topology, data_dir, "POST", f"/links/{a}/{b}", body)["links"])


@link_app.command("show")
def link_show(topology: TopologyFile = None, data_dir: DataDir = Path("data")) -> None:
    """Every link's state."""
    _show_links(_control(topology, data_dir, "GET", "/links")["links"])


def _show_links(links: list[dict[str, Any]]) -> None:
    from bookstore.runtime.status import render_links

    render_links(links)


@app.command()
def status(
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of tables.")] = False,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Health of every region, replication lag and pending changes per pair, conflicts, links, credentials."""
    from bookstore.runtime.secret import MissingCredential, operator_token
    from bookstore.runtime.status import collect, render, render_credentials

    topo = _topology(topology)
    token: str | None = None
    try:
        token = operator_token(data_dir)
    except MissingCredential as exc:
        # The regions answer anyone; the supervisor and the edge only the operator.
        typer.echo(f"warning: {exc}; processes, links and the edge are not shown", err=True)
    report = collect(topo, token)
    report["credentials"] = _credentials_report(topo, data_dir, token)
    if as_json:
        typer.echo(json.dumps(report, indent=2, ensure_ascii=False))
    else:
        render(report)
        render_credentials(report["credentials"])


def _credentials_report(topo: Topology, data_dir: Path, token: str | None) -> dict[str, Any]:
    """Where the deployment's credentials are and how to use them (the S3 secret key itself: `aws-env`)."""
    from bookstore.runtime.control import login_link
    from bookstore.runtime.secret import S3_FILE, TOKEN_FILE, MissingCredential, s3_access

    try:
        key_id: str | None = s3_access(topo, data_dir, create=False).access_key_id
    except MissingCredential:
        key_id = None
    return {
        "dataDir": str(data_dir.resolve()),
        "s3AccessKeyId": key_id,
        "s3Credentials": "topology" if topo.s3 is not None else str((data_dir / S3_FILE).resolve()),
        "operatorToken": str((data_dir / TOKEN_FILE).resolve()),
        "operatorLink": login_link(topo.edge.url, token) if token and topo.edge.enabled else None,
    }


@app.command()
def drill(
    scenario: Annotated[
        str,
        typer.Argument(help="region-outage, api-break, partition, slow-link, clock-skew or blog-failover."),
    ],
    rate: Annotated[float, typer.Option("--rate", min=1, help="Requests per second of the workload.")] = 40.0,
    duration: Annotated[float, typer.Option("--duration", min=5, help="Seconds of workload.")] = 30.0,
    write_rate: Annotated[
        float,
        typer.Option(
            "--write-rate",
            min=0,
            help="Orders per second written straight to the home region's API besides the shoppers "
            "(a backend's writes, not failed over): they count in RPO, loss, duplicates, best sellers.",
        ),
    ] = 0.0,
    attach: Annotated[
        bool, typer.Option("--attach", help="Drill the running system instead of starting a fresh one.")
    ] = False,
    seed: Annotated[int, typer.Option("--seed", help="Seed of the workload's random choices.")] = 1,
    settle: Annotated[
        float, typer.Option("--settle", min=1, help="Most seconds to wait for convergence after the fault.")
    ] = 30.0,
    regions: Annotated[
        int | None,
        typer.Option(
            "--regions",
            min=2,
            help="Start this many regions (the topology's first N, the home region first) instead of its "
            "active ones: 2 or 3 with the default topology (with --attach: as many as run).",
        ),
    ] = None,
    rto_window: Annotated[
        float,
        typer.Option(
            "--rto-window",
            min=0.1,
            help="Seconds without a failed request of a kind after which that kind has recovered.",
        ),
    ] = 2.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the record as JSON.")] = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Run a failover drill through the edge and check RTO, RPO, loss, duplicates and convergence.

    Progress goes to stderr while it runs; the summary (or the record with --json) to stdout.
    """
    from bookstore.drills.runner import Options, run
    from bookstore.drills.scenarios import SCENARIOS

    if scenario not in SCENARIOS:
        typer.echo(f"error: unknown scenario {scenario!r}; one of: {', '.join(SCENARIOS)}", err=True)
        raise typer.Exit(2)
    options = Options(
        scenario, rate, duration, attach, data_dir, topology, seed, settle, write_rate,
        regions=regions, rto_window_s=rto_window, progress=lambda line: typer.echo(line, err=True),
    )  # fmt: skip
    try:
        record = run(options)
    except RuntimeError as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None
    if as_json:
        typer.echo(json.dumps(record, indent=2, ensure_ascii=False))
    else:
        _drill_summary(record)
    raise typer.Exit(0 if record["passed"] else 1)


def _drill_summary(record: Any) -> None:
    from rich.console import Console

    from bookstore.drills.report import print_summary

    print_summary(record, Console())


@app.command()
def conflicts(
    region: RegionOpt = None,
    limit: Annotated[int, typer.Option("--limit")] = 20,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Recent conflicts (concurrent writes to one item) seen by a region: winner and loser."""
    from rich.console import Console
    from rich.table import Table

    from bookstore.api.commands import conflict_json

    def local(services: RegionServices) -> list[dict[str, Any]] | None:
        if services.replica is None:
            return None
        return [conflict_json(c) for c in services.replica.conflicts(limit)]

    def remote(running: RegionCommands) -> list[dict[str, Any]] | None:
        answer = running.conflicts(limit)
        return None if answer["native"] else list(answer["conflicts"])

    records = _command(topology, region, data_dir, "conflicts", local, remote)
    if records is None:
        typer.echo("this backend replicates natively and reports no conflicts")
        return
    if as_json:
        typer.echo(json.dumps(records, indent=2))
        return
    table = Table("detected", "table", "key", "winner", "loser")
    for c in records:
        table.add_row(
            str(c["detected_ms"]),
            c["table"],
            json.dumps(c["key"]),
            str(tuple(c["winner_version"])),
            str(tuple(c["loser_version"])),
        )
    Console().print(table)


@app.command("aws-env")
def aws_env(
    region: Annotated[
        str | None, typer.Argument(help="Region whose S3 API to use; default: the home region.")
    ] = None,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Print `export` lines pointing the `aws` CLI and boto3 at a region's S3 API (the deployment's keys)."""
    import shlex

    topo = _topology(topology)
    try:
        target = topo.region(region or topo.home_region)
    except KeyError as exc:
        raise typer.BadParameter(str(exc.args[0]), param_hint="REGION") from None
    access = _s3_access(topo, data_dir)
    for name, value in (
        ("AWS_ACCESS_KEY_ID", access.access_key_id),
        ("AWS_SECRET_ACCESS_KEY", access.secret_access_key),
        ("AWS_DEFAULT_REGION", target.id),
        ("AWS_ENDPOINT_URL", target.s3_url),
    ):
        typer.echo(f"export {name}={shlex.quote(value)}")


@app.command()
def publish(
    source: Annotated[
        Path | None,
        typer.Option(
            "--source", exists=True, file_okay=False, help="A directory of storefront files to upload too."
        ),
    ] = None,
    topology: TopologyFile = None,
    data_dir: DataDir = Path("data"),
) -> None:
    """Upload the storefront's static files (covers, index.html) to the home region's bucket."""
    from bookstore.objectstore.setup import publish as publish_files

    topo = _topology(topology)
    try:
        report = publish_files(topo, _s3_access(topo, data_dir), source)
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    typer.echo(
        f"published to s3://{report.bucket}: {len(report.uploaded)} uploaded, "
        f"{len(report.unchanged)} unchanged"
    )


def _s3_access(topo: Topology, data_dir: Path) -> Any:
    """The S3 key pair of the deployment in `data_dir` (or the topology's); exits when there is none."""
    from bookstore.runtime.secret import MissingCredential, s3_access

    try:
        return s3_access(topo, data_dir, create=False)
    except MissingCredential as exc:
        typer.echo(f"error: {exc}", err=True)
        raise typer.Exit(2) from None


secrets_app = typer.Typer(
    help="The deployment's own credentials (S3 keys, inter-region secret, operator token)."
)
app.add_typer(secrets_app, name="secrets")


@secrets_app.command("rotate")
def secrets_rotate(
    only: Annotated[
        list[str] | None,
        typer.Option("--only", help="s3, secret or operator-token (repeatable); default: all three."),
    ] = None,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Replace the deployment's credentials with new ones; the system must be stopped and started again."""
    import httpx

    from bookstore.runtime.secret import KINDS, overridden, rotate

    kinds = only or list(KINDS)
    unknown = sorted(set(kinds) - set(KINDS))
    if unknown:
        typer.echo(f"error: unknown credential(s) {', '.join(unknown)}; known: {', '.join(KINDS)}", err=True)
        raise typer.Exit(2)
    url = _topology(topology).control_url
    try:
        httpx.get(url + "/regions", timeout=2)
    except httpx.HTTPError:
        pass
    else:
        # The running processes hold the old values: regions would stop trusting each other mid-flight.
        typer.echo(
            f"error: the system answers at {url}: stop it (Ctrl-C), rotate, then start it again", err=True
        )
        raise typer.Exit(1)
    for name in rotate(data_dir, kinds):
        typer.echo(f"new {name} in {data_dir.resolve()}")
    for name in overridden(kinds):
        typer.echo(f"warning: {name} is set in this environment and overrides the file", err=True)
    typer.echo("start the system again (`bookstore up`) to use them; old sign-in links and sessions are void")


@app.command("operator-link")
def operator_link(data_dir: DataDir = Path("data"), topology: TopologyFile = None) -> None:
    """Print a one-time sign-in link to the operator page (valid for an hour, good for one browser tab)."""
    from bookstore.runtime.control import login_link

    topo = _topology(topology)
    if not topo.edge.enabled:
        typer.echo("error: the edge is disabled in this topology: there is no operator page", err=True)
        raise typer.Exit(2)
    typer.echo(login_link(topo.edge.url, _operator_token(data_dir)))


@users_app.command("add")
def users_add(
    email: str,
    password: Annotated[str, typer.Option("--password", prompt=True, hide_input=True)],
    role: Annotated[str, typer.Option("--role", help="customer or author")] = "customer",
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
    region: RegionOpt = None,
) -> None:
    """Create a confirmed user."""

    def local(services: RegionServices) -> dict[str, Any]:
        user = services.identity.add_user(email, password, role=role)
        return {"email": user.email, "role": user.role, "userId": user.user_id}

    user = _command(
        topology,
        region,
        data_dir,
        "users add",
        local,
        lambda running: running.add_user(email, password, role),
    )
    typer.echo(f"added {user['email']} ({user['role']}), user id {user['userId']}")


@users_app.command("confirm-code")
def users_confirm_code(
    email: str, data_dir: DataDir = Path("data"), topology: TopologyFile = None, region: RegionOpt = None
) -> None:
    """Print the confirmation code of a user who signed up (there is no mail server)."""
    code = _command(
        topology,
        region,
        data_dir,
        "users confirm-code",
        lambda services: services.identity.confirmation_code(email),
        lambda running: running.confirmation_code(email),
    )
    typer.echo(code)


aws_app = typer.Typer(
    help="DynamoDB Global Tables for the dynamodb backend (where DynamoDB replicates, not us).",
    no_args_is_help=True,
)
app.add_typer(aws_app, name="aws")

EndpointUrl = Annotated[
    str | None,
    typer.Option("--endpoint-url", help="DynamoDB endpoint; default: the topology's, else AWS itself."),
]
TableArg = Annotated[
    str,
    typer.Argument(
        help="A Bookstore table (books, carts...; the topology's prefix is added) or a full name."
    ),
]


def _dynamodb(topo: Topology, endpoint_url: str | None) -> Any:
    """A factory of DynamoDB clients per region, configured as bootstrap configures the backend's."""
    import boto3
    import botocore.config

    endpoint = endpoint_url or topo.storage.dynamodb_endpoint
    config = botocore.config.Config(account_id_endpoint_mode="disabled")

    def client_for(region: str) -> Any:
        return boto3.session.Session(region_name=region).client(
            "dynamodb", endpoint_url=endpoint, config=config
        )

    return client_for


def _dynamodb_table(topo: Topology, table: str) -> str:
    from bookstore import tables

    known = {schema.name for schema in tables.ALL}
    return topo.storage.table_prefix + table if table in known else table


def _show_global(report: dict[str, Any], as_json: bool) -> None:
    if as_json:
        typer.echo(json.dumps(report, indent=2))
        return
    for replica in report["replicas"]:
        detail = f" ({replica['detail']})" if "detail" in replica else ""
        typer.echo(f"{report['table']}  {replica['region']}  {replica['status']}{detail}")


@aws_app.command("make-global")
def aws_make_global(
    table: TableArg,
    regions: Annotated[
        str, typer.Option("--regions", help="Comma-separated regions, e.g. eu-west-1,ap-southeast-1.")
    ],
    region: RegionOpt = None,
    endpoint_url: EndpointUrl = None,
    timeout: Annotated[
        float, typer.Option("--timeout", help="Seconds to wait for replicas to be ACTIVE.")
    ] = 3600.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    topology: TopologyFile = None,
) -> None:
    """Make a table global (UpdateTable ReplicaUpdates), a replica at a time; existing ones are skipped."""
    from bookstore.storage.dynamodb.global_tables import make_global

    topo = _topology(topology)
    client_for = _dynamodb(topo, endpoint_url)
    name = _dynamodb_table(topo, table)
    try:
        report = make_global(
            client_for(region or topo.home_region),
            name,
            regions.split(","),
            client_for=client_for,
            timeout_s=timeout,
        )
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    if not as_json:
        added = ", ".join(report["created"]) or "none"
        typer.echo(
            f"{name}: replicas created: {added}; already there: {', '.join(report['skipped']) or 'none'}"
        )
    _show_global(report, as_json)


@aws_app.command("describe-global")
def aws_describe_global(
    table: TableArg,
    region: RegionOpt = None,
    endpoint_url: EndpointUrl = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON.")] = False,
    topology: TopologyFile = None,
) -> None:
    """The regions of a table (its own first) and each one's status."""
    from bookstore.storage.dynamodb.global_tables import describe_global

    topo = _topology(topology)
    name = _dynamodb_table(topo, table)
    try:
        replicas = describe_global(_dynamodb(topo, endpoint_url)(region or topo.home_region), name)
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None
    _show_global({"table": name, "replicas": replicas}, as_json)


blog_app = typer.Typer(
    help="The blog's SQL database: promote a replica, rejoin a former primary, switch over, diverged writes.",
    no_args_is_help=True,
)
app.add_typer(blog_app, name="blog")


@contextmanager
def _blog_operator(topology: Path | None, data_dir: Path) -> Iterator[Any]:
    """Requests to the running regions signed as the operator; a refusal ends the command with its message."""
    from bookstore.blog.replication import Operator, operator_secret
    from bookstore.replication.clock import SystemClock

    urls = {r.id: r.api_url for r in _topology(topology).regions}
    try:
        with Operator(urls, operator_secret(data_dir), SystemClock()) as operator:
            yield operator
    except BookstoreError as exc:
        typer.echo(f"error: {exc.message}", err=True)
        raise typer.Exit(1) from None


@blog_app.command("promote")
def blog_promote(
    region: str,
    force: Annotated[
        bool,
        typer.Option(
            "--force",
            help="Promote even when REGION reaches no majority of the regions (they are down, not cut off).",
        ),
    ] = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Unplanned: make REGION the blog's primary at a new epoch; it takes writes at once.

    Refused unless REGION reaches a majority of the regions named in the epoch history (or --force).
    """
    with _blog_operator(topology, data_dir) as op:
        state = op.promote(region, force=force)
    typer.echo(f"{region}: primary of the blog at epoch {state['epoch']} (from lsn {state['headLsn']})")


@blog_app.command("rejoin")
def blog_rejoin(region: str, data_dir: DataDir = Path("data"), topology: TopologyFile = None) -> None:
    """Re-sync a former primary as a replica of the current primary; its diverged writes are kept aside."""
    with _blog_operator(topology, data_dir) as op:
        state = op.rejoin(region)
    typer.echo(
        f"{region}: replica of {state['primaryRegion']} at epoch {state['epoch']}, "
        f"from lsn {state['appliedLsn']}; "
        f"{state['diverged']} diverged write(s) kept aside ({state['divergedTotal']} in all)"
    )


@blog_app.command("switchover")
def blog_switchover(region: str, data_dir: DataDir = Path("data"), topology: TopologyFile = None) -> None:
    """Planned: the primary turns read-only, REGION applies everything, then takes writes. Loses nothing."""
    with _blog_operator(topology, data_dir) as op:
        done = op.switchover(region)
    typer.echo(
        f"switched over from {done['from']} to {done['to']} at lsn {done.get('lsn')}, epoch {done['epoch']}"
    )


@blog_app.command("diverged")
def blog_diverged(
    region: RegionOpt = None,
    as_json: Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")] = False,
    data_dir: DataDir = Path("data"),
    topology: TopologyFile = None,
) -> None:
    """Writes a former primary accepted after the fork: kept aside, never dropped (default: every region)."""
    from bookstore.blog.replication import render_diverged

    regions = [region] if region else [r.id for r in _topology(topology).regions]
    reports: dict[str, Any] = {}
    with _blog_operator(topology, data_dir) as op:
        for r in regions:
            try:
                reports[r] = op.diverged(r)
            except BookstoreError as exc:
                if region:
                    raise
                reports[r] = {"region": r, "error": exc.message}
    if as_json:
        typer.echo(json.dumps(reports, indent=2, ensure_ascii=False))
    else:
        render_diverged(reports)


def main() -> None:
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    app()
