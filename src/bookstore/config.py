"""The topology: regions, their addresses, the home region, links and storage backends."""

from __future__ import annotations

import ipaddress
import json
import os
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal
from urllib.parse import unquote, urlsplit

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr, ValidationError, model_validator

from bookstore.kernel.settings import SettingsError, env_overrides, merged, sources, unknown_keys

Backend = Literal["sqlite", "dynamodb"]
RankingBackend = Literal["sqlite", "redis"]
BlogBackend = Literal["sqlite", "mysql"]


@dataclass(frozen=True)
class MysqlDsn:
    """A MySQL/MariaDB address and account: `mysql://user:password@host:port/database`."""

    host: str
    port: int
    user: str
    password: str
    database: str


def parse_mysql_dsn(dsn: str, *, database: bool = True) -> MysqlDsn:
    """Parses `mysql://user:password@host:port/database` (the database only when `database`); ValueError
    saying what is wrong otherwise."""
    parts = urlsplit(dsn)
    name = parts.path.lstrip("/")
    if parts.scheme not in ("mysql", "mariadb") or not parts.hostname or not parts.username:
        raise ValueError(f"{dsn!r} is not a DSN of the form mysql://user:password@host:port/database")
    if database and not name:
        raise ValueError(f"{dsn!r} names no database (mysql://user:password@host:port/DATABASE)")
    try:
        port = parts.port or 3306
    except ValueError:
        raise ValueError(f"{dsn!r} has a port that is not a number") from None
    return MysqlDsn(parts.hostname, port, unquote(parts.username), unquote(parts.password or ""), name)


class Region(BaseModel):
    """One region: its own process, data directory and loopback address."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    id: str
    name: str
    flag: str
    address: str
    # Where its listeners bind when that is not `address` (a host behind NAT binds its own address or
    # 0.0.0.0 while the others reach it at `address`); None: `address`.
    bind_address: str | None = None
    api_port: int = 8000
    s3_port: int = 9000
    # The port of the host's agent (`bookstore region agent`: runs this region, kills and starts it on the
    # operator's signed request) on a topology without a supervisor; None: no agent.
    agent_port: int | None = None
    # Where clients in this region are, for latency routing: (latitude, longitude).
    location: tuple[float, float] = (0.0, 0.0)
    # With `[storage] blog = "mysql"`: this region's MariaDB/MySQL server, as the application's account
    # (mysql://user:password@host:port/database; no SUPER, so read_only holds against it) and as an
    # administrative one (mysql://root:password@host:port) that runs its replication.
    blog_dsn: str | None = None
    blog_admin_dsn: str | None = None
    # "https" when the topology's [tls] is enabled: set by the topology, not by a region's own table.
    _scheme: str = PrivateAttr(default="http")

    @property
    def scheme(self) -> str:
        return self._scheme

    @property
    def api_url(self) -> str:
        return f"{self._scheme}://{self.address}:{self.api_port}"

    @property
    def listen_address(self) -> str:
        return self.bind_address or self.address

    @property
    def s3_url(self) -> str:
        return f"{self._scheme}://{self.address}:{self.s3_port}"

    @property
    def agent_url(self) -> str | None:
        return None if self.agent_port is None else f"{self._scheme}://{self.address}:{self.agent_port}"


class Storage(BaseModel):
    """Which engine backs each port; the defaults are the embedded ones."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tables: Backend = "sqlite"
    ranking: RankingBackend = "sqlite"
    redis_url: str = "redis://127.0.0.1:6379/0"
    # For the dynamodb backend: endpoint (None = AWS itself) and the table name prefix.
    dynamodb_endpoint: str | None = None
    table_prefix: str = "bookstore-"
    # Objects: "local" (files + SQLite in the region's data dir) or "s3" (boto3, S3 replicates natively).
    objects: Literal["local", "s3"] = "local"
    s3_endpoint: str | None = None
    # What an acknowledged write survives (storage.durability): "process" = kill -9 of the process,
    # "power" = a power loss too (synchronous=FULL, fsync of object blobs and their directories).
    # Spelled out rather than imported, so that the topology depends on no adapter; mypy holds it equal
    # to storage.durability.Durability wherever region.compose hands it to a store.
    durability: Literal["process", "power"] = "process"
    # How long a day of S3 lifecycle rules lasts (objectstore.sweeper): S3's 86,400 s; tests shorten it.
    lifecycle_day_seconds: float = Field(default=86_400.0, gt=0)
    # The blog's SQL database: "sqlite" (a file in each region's data dir, our log-shipping replication)
    # or "mysql" (each region's `blog_dsn`, MariaDB's GTID replication).
    blog: BlogBackend = "sqlite"


class ObjectStoreAccess(BaseModel):
    """The credentials every region's S3 API accepts (SigV4), as `bookstore aws-env` prints them.

    Each deployment makes its own at first start (bookstore.runtime.secret); a topology gives some only
    to pin them (a benchmark's server alone, say).
    """

    model_config = ConfigDict(frozen=True, extra="forbid")

    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)


class Replication(BaseModel):
    """Table replication between regions (our replicator; DynamoDB Global Tables replace it on dynamodb)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    tables: tuple[str, ...] = (
        "books",
        "orders",
        "carts",
        "users",
        "keys",
        "sessions",
        "revocations",
        "attempts",
        "buckets",
    )
    anti_entropy_s: float = 30.0
    # Anti-entropy compares only versions older than this: younger ones may still be on their way,
    # and comparing them under a steady stream of writes would "repair" what the logs deliver anyway.
    anti_entropy_settle_s: float = Field(default=10.0, ge=0)
    # A change stamped further ahead of a region's wall clock than this (a peer's clock running fast)
    # is not applied and does not move its hybrid clock: the region stops following that peer until
    # the offset is back within the bound.
    max_clock_offset_ms: int = Field(default=500, ge=1)
    # Log entries every peer has received are kept this long before trimming.
    retention_s: float = 3600.0


class HealthCheck(BaseModel):
    """A health check of one edge target (Route 53's): HTTP GET of `path`, its timing and thresholds."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    path: str = "/books"
    interval_s: float = Field(default=1.0, gt=0)
    timeout_s: float = Field(default=1.0, gt=0)
    # Consecutive failures that make a healthy target unhealthy, successes that make it healthy again.
    failure_threshold: int = Field(default=1, ge=1)
    success_threshold: int = Field(default=1, ge=1)
    # When set, a 2xx/3xx answer counts only if this text is in the first 5,120 bytes of its body.
    search_string: str | None = None


# The workshop's Route 53 health checks: every 10 s ("fast"), unhealthy after one failure.
HEALTH_PRESETS: dict[str, HealthCheck] = {
    "default": HealthCheck(),
    "workshop": HealthCheck(interval_s=10.0, timeout_s=4.0, failure_threshold=1, success_threshold=1),
}


class Edge(BaseModel):
    """The edge (Route 53 + CloudFront): one address for the whole system, and a DNS server on loopback."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = True
    address: str = "127.0.0.1"
    # Where the edge's HTTP and DNS listeners bind when that is not `address` / `dns_address` (behind
    # NAT, or 0.0.0.0); None: those addresses.
    bind_address: str | None = None
    port: int = 8080
    dns_address: str = "127.0.0.1"
    dns_port: int = 5353
    zone: str = "bookstore.test"
    dns_ttl_s: int = Field(default=5, ge=0)
    # Where a client is when it says nothing (X-Client-Region header or cookie); None: the home region.
    default_client_region: str | None = None
    health_preset: Literal["default", "workshop"] = "default"
    # Overrides the preset when given.
    health: HealthCheck | None = None
    # Route 53's rule: a record whose targets are all unhealthy answers as if all were healthy.
    all_unhealthy_answers_all: bool = True
    # Idempotent API requests that meet a failure are retried once on the next healthy region.
    retry: bool = True
    # A request that meets a failure takes its target out of rotation until a health check passes.
    breaker: bool = True
    connect_timeout_s: float = Field(default=1.0, gt=0)
    api_timeout_s: float = Field(default=10.0, gt=0)
    origin_timeout_s: float = Field(default=5.0, gt=0)

    @property
    def url(self) -> str:
        return f"http://{self.address}:{self.port}"

    @property
    def health_check(self) -> HealthCheck:
        return self.health or HEALTH_PRESETS[self.health_preset]


class Tls(BaseModel):
    """TLS between hosts: every region's listeners present the host's certificate, every client between
    hosts verifies it against the deployment's CA (`bookstore tls init|issue` make them)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    enabled: bool = False
    # Paths; a relative one is under the host's data directory, where `tls issue`'s files are copied.
    ca: str = "tls/ca.crt"
    cert: str = "tls/host.crt"
    key: str = "tls/host.key"


class Observability(BaseModel):
    """Logs and traces: what a process writes for an operator's tools (issue 18)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    # "text" for people, "json" (one object a line) for a log collector; `--log-format` overrides.
    log_format: Literal["text", "json"] = "text"
    # One line per request (with its request id) from the regions and the edge; off, as it costs time.
    access_log: bool = False
    # Where OpenTelemetry traces go (OTLP over HTTP, e.g. http://127.0.0.1:4318); None: the standard
    # OTEL_EXPORTER_OTLP_ENDPOINT (or OTEL_EXPORTER_OTLP_TRACES_ENDPOINT) when set, else no tracing at all.
    otlp_endpoint: str | None = None


class Topology(BaseModel):
    """Everything that differs between deployments; the defaults need no file."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    regions: tuple[Region, ...] = Field(default_factory=lambda: DEFAULT_REGIONS)
    # Regions that `up` starts; the third default region joins only when asked for.
    active: tuple[str, ...] = ("eu-west-1", "ap-southeast-1")
    home_region: str = "eu-west-1"
    storage: Storage = Field(default_factory=Storage)
    replication: Replication = Field(default_factory=Replication)
    # None: the deployment's own S3 key pair, made at first start in the data directory.
    s3: ObjectStoreAccess | None = None
    # The supervisor's control API (regions and links), on loopback.
    control_address: str = "127.0.0.1"
    control_port: int = 7070
    # How regions reach each other: "simulated" (through the link simulator's proxies, `link_address`) or
    # "direct" (each at the other's own address: regions on separate hosts, a real network between them).
    links: Literal["simulated", "direct"] = "simulated"
    # Pairs of regions that reach each other directly even when `links = "simulated"` (both directions).
    direct_links: tuple[tuple[str, str], ...] = ()
    # False: no supervisor runs this topology (`up` refuses); each host starts its own `region serve` and
    # one the edge (by hand or systemd), so nothing can kill, start or cut anything from one place.
    supervised: bool = True
    # The edge process and its DNS server (bookstore.edge).
    edge: Edge = Field(default_factory=Edge)
    observability: Observability = Field(default_factory=Observability)
    tls: Tls = Field(default_factory=Tls)
    # Lifetime of access tokens, seconds.
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600

    @model_validator(mode="after")
    def _known_regions(self) -> Topology:
        ids = [r.id for r in self.regions]
        if len(set(ids)) != len(ids):
            raise ValueError("region ids must be unique")
        for rid in (*self.active, self.home_region, *(r for pair in self.direct_links for r in pair)):
            if rid not in ids:
                raise ValueError(f"unknown region {rid!r}; known: {', '.join(ids)}")
        if not self.supervised:
            # Every region's, not only the active ones': a host may serve any region of the topology.
            simulated = [f"{a} <-> {b}" for a, b in _pairs(ids) if not self.is_direct(a, b)]
            if simulated:
                # Only the supervisor runs the link simulator: these pairs would reach nothing.
                raise ValueError(
                    'supervised = false needs direct links (links = "direct"); '
                    f"simulated: {', '.join(simulated)}"
                )
        if self.tls.enabled:
            if self.simulated_links:
                # A proxy's link address is not the one in the region's certificate.
                raise ValueError('[tls] enabled = true needs direct links between hosts (links = "direct")')
            if self.supervised:
                # `up` runs every region on this one machine, where nothing crosses a network to encrypt.
                raise ValueError(
                    "[tls] enabled = true is for regions on separate hosts: it needs supervised = false "
                    "(each host runs `bookstore region serve`)"
                )
            # Copies (the defaults are shared); the scheme is private, so it follows [tls] alone.
            regions = tuple(r.model_copy() for r in self.regions)
            for r in regions:
                r._scheme = "https"
            object.__setattr__(self, "regions", regions)
        if self.storage.blog == "mysql":
            for r in self.regions:
                if r.id not in self.active:
                    continue
                if not r.blog_dsn or not r.blog_admin_dsn:
                    raise ValueError(
                        f'[storage] blog = "mysql": region {r.id} needs blog_dsn '
                        "(mysql://user:password@host:port/database, the application's account) and "
                        "blog_admin_dsn (mysql://root:password@host:port, for its replication)"
                    )
                parse_mysql_dsn(r.blog_dsn)
                parse_mysql_dsn(r.blog_admin_dsn, database=False)
        return self

    def region(self, region_id: str) -> Region:
        for r in self.regions:
            if r.id == region_id:
                return r
        known = ", ".join(r.id for r in self.regions)
        raise KeyError(f"unknown region {region_id!r}; known: {known}")

    def is_direct(self, a: str, b: str) -> bool:
        """True when regions `a` and `b` reach each other at their own addresses, not by the simulator."""
        return self.links == "direct" or any({a, b} == set(pair) for pair in self.direct_links)

    @property
    def simulated_links(self) -> bool:
        """True when some pair of regions goes through the link simulator (which only the supervisor runs)."""
        ids = [r.id for r in self.regions]
        return any(not self.is_direct(a, b) for a, b in _pairs(ids))

    @property
    def control_url(self) -> str:
        return f"http://{self.control_address}:{self.control_port}"

    @property
    def home(self) -> Region:
        return self.region(self.home_region)

    @classmethod
    def load(cls, path: Path | None = None, environ: Mapping[str, str] | None = None) -> Topology:
        """The defaults, overridden by the TOML file at `path` when given (or a JSON one, as a tool that
        derives a topology from another writes it: `model_dump_json`), then by BOOKSTORE_ variables.

        SettingsError names every unknown key (with the closest valid one); ValidationError says
        what is wrong with a value.
        """
        return load_with_sources(path, environ).topology


def explain(exc: ValidationError, path: Path | None, environ: Mapping[str, str] | None = None) -> list[str]:
    """Each value the topology refused: its key, what is wrong, where it was set (a variable, the file)."""
    try:
        variables = env_overrides(Topology, os.environ if environ is None else environ, ENV_PREFIX).variables
    except SettingsError:
        variables = {}
    problems = []
    for error in exc.errors():
        keys = [str(part) for part in error["loc"]]
        prefixes = (".".join(keys[:n]) for n in range(len(keys), 0, -1))
        where = next(
            (f" (from {variables[p]})" for p in prefixes if p in variables),
            f" (in {path})" if path is not None else "",
        )
        problems.append(f"{'.'.join(keys) or 'topology'}: {error['msg']}{where}")
    return problems


# Variables that override a topology setting: BOOKSTORE_<KEY> or BOOKSTORE_<SECTION>__<KEY>.
ENV_PREFIX = "BOOKSTORE_"


@dataclass(frozen=True)
class LoadedTopology:
    """The effective topology and where each of its values came from (`default`, `file`, `env:VAR`)."""

    topology: Topology
    sources: dict[str, str]
    path: Path | None


def read_topology_file(path: Path) -> dict[str, Any]:
    """The raw tables of a TOML (or JSON) topology file."""
    try:
        if path.suffix == ".json":
            data = json.loads(path.read_bytes())
        else:
            with path.open("rb") as f:
                data = tomllib.load(f)
    except ValueError as exc:  # tomllib.TOMLDecodeError and json.JSONDecodeError are ValueErrors
        kind = "JSON" if path.suffix == ".json" else "TOML"
        raise SettingsError([f"not valid {kind}: {exc}"], str(path)) from None
    if not isinstance(data, dict):
        raise SettingsError(["a topology is a table of settings"], str(path))
    return data


def load_with_sources(path: Path | None = None, environ: Mapping[str, str] | None = None) -> LoadedTopology:
    """The defaults, the file at `path`, then the environment's BOOKSTORE_ variables, and the source of
    each value. Unknown keys (file or variable) raise SettingsError naming the closest valid one."""
    from_file = read_topology_file(path) if path is not None else {}
    problems = unknown_keys(Topology, from_file)
    if problems:
        raise SettingsError(problems, str(path))
    env = env_overrides(Topology, os.environ if environ is None else environ, ENV_PREFIX)
    topology = Topology.model_validate(merged(from_file, env.values))
    return LoadedTopology(topology, sources(topology, from_file, env.variables), path)


def _pairs(ids: tuple[str, ...] | list[str]) -> list[tuple[str, str]]:
    """Every unordered pair of distinct regions among `ids`."""
    return [(a, b) for i, a in enumerate(ids) for b in ids[i + 1 :]]


DEFAULT_REGIONS: tuple[Region, ...] = (
    Region(id="eu-west-1", name="Ireland", flag="🇮🇪", address="127.0.1.1", location=(53.3, -6.3)),
    Region(id="ap-southeast-1", name="Singapore", flag="🇸🇬", address="127.0.2.1", location=(1.35, 103.8)),
    Region(id="us-east-1", name="N. Virginia", flag="🇺🇸", address="127.0.3.1", location=(38.9, -77.4)),
)

# One-way delays from real round trips between the AWS regions (half the RTT).
DEFAULT_DELAYS_MS: Mapping[frozenset[str], float] = {
    frozenset({"eu-west-1", "ap-southeast-1"}): 85.0,
    frozenset({"eu-west-1", "us-east-1"}): 35.0,
    frozenset({"ap-southeast-1", "us-east-1"}): 110.0,
}

# Link addresses: 127.0.1.1 reaches the second region at 127.0.1.102 (see link_address).
LINK_HOST_BASE = 100

# Addresses. Region i (its 1-based position in the topology) listens on its own address. Region `src`
# reaches region `dst` at `link_address(topology, src, dst)`: the source region's address with its last
# octet replaced by 100 + i(dst), on the same port as dst's service. With the default topology Ireland
# (127.0.1.1) reaches Singapore's API at http://127.0.1.102:8000, which the proxy for the directed pair
# eu-west-1 -> ap-southeast-1 forwards to 127.0.2.1:8000. Every region therefore needs a /24 of its own
# (its first three octets): the simulator refuses a topology whose listening endpoints would collide.


def region_index(topology: Topology, region_id: str) -> int:
    """The 1-based position of `region_id` in the topology; raises KeyError for an unknown region."""
    for index, region in enumerate(topology.regions, start=1):
        if region.id == region_id:
            return index
    raise KeyError(f"unknown region {region_id!r}; known: {', '.join(r.id for r in topology.regions)}")


def link_address(topology: Topology, src: str, dst: str) -> str:
    """The address at which region `src` reaches region `dst`: dst's own on a direct link, else a proxy's.

    Through the link simulator: the source region's IPv4 address with its last octet replaced by 100 +
    the destination's 1-based position in the topology (127.0.1.1 -> 127.0.1.102 for the second
    region); a region reaches itself at its own address. Raises KeyError for an unknown region,
    ValueError for an address that is not IPv4 or a topology too large for the scheme (more than 154
    regions).
    """
    source = topology.region(src)
    if src == dst:
        return source.address
    if topology.is_direct(src, dst):
        return topology.region(dst).address
    index = region_index(topology, dst)
    try:
        ip = ipaddress.IPv4Address(source.address)
    except ValueError as exc:
        raise ValueError(
            f"region {src}: address {source.address!r} is not an IPv4 address; "
            "the link simulator derives link addresses from it"
        ) from exc
    last = LINK_HOST_BASE + index
    if last > 254:
        raise ValueError(
            f"region {dst} is number {index}; link addresses allow at most {254 - LINK_HOST_BASE}"
        )
    return ".".join([*str(ip).split(".")[:3], str(last)])


def link_url(topology: Topology, src: str, dst: str, port: int | None = None) -> str:
    """The base URL at which region `src` reaches `dst`'s service on `port` (default: dst's API port)."""
    target = topology.region(dst)
    port = port if port is not None else target.api_port
    return f"{target.scheme}://{link_address(topology, src, dst)}:{port}"
