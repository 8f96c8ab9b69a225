"""The topology: regions, their addresses, the home region, links and storage backends."""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from bookstore.storage.durability import Durability

Backend = Literal["sqlite", "dynamodb"]
RankingBackend = Literal["sqlite", "redis"]


class Region(BaseModel):
    """One region: its own process, data directory and loopback address."""

    model_config = ConfigDict(frozen=True)

    id: str
    name: str
    flag: str
    address: str
    api_port: int = 8000
    s3_port: int = 9000
    # Where clients in this region are, for latency routing: (latitude, longitude).
    location: tuple[float, float] = (0.0, 0.0)

    @property
    def api_url(self) -> str:
        return f"http://{self.address}:{self.api_port}"

    @property
    def s3_url(self) -> str:
        return f"http://{self.address}:{self.s3_port}"


class Storage(BaseModel):
    """Which engine backs each port; the defaults are the embedded ones."""

    model_config = ConfigDict(frozen=True)

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
    durability: Durability = "process"


class ObjectStoreAccess(BaseModel):
    """The credentials every region's S3 API accepts (SigV4), as `bookstore aws-env` prints them.

    Each deployment makes its own at first start (bookstore.runtime.secret); a topology gives some only
    to pin them (a benchmark's server alone, say).
    """

    model_config = ConfigDict(frozen=True)

    access_key_id: str = Field(min_length=1)
    secret_access_key: str = Field(min_length=1)


class Replication(BaseModel):
    """Table replication between regions (our replicator; DynamoDB Global Tables replace it on dynamodb)."""

    model_config = ConfigDict(frozen=True)

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

    model_config = ConfigDict(frozen=True)

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

    model_config = ConfigDict(frozen=True)

    enabled: bool = True
    address: str = "127.0.0.1"
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


class Topology(BaseModel):
    """Everything that differs between deployments; the defaults need no file."""

    model_config = ConfigDict(frozen=True)

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
    # The edge process and its DNS server (bookstore.edge).
    edge: Edge = Field(default_factory=Edge)
    # Lifetime of access tokens, seconds.
    access_token_ttl: int = 900
    refresh_token_ttl: int = 30 * 24 * 3600

    @model_validator(mode="after")
    def _known_regions(self) -> Topology:
        ids = [r.id for r in self.regions]
        if len(set(ids)) != len(ids):
            raise ValueError("region ids must be unique")
        for rid in (*self.active, self.home_region):
            if rid not in ids:
                raise ValueError(f"unknown region {rid!r}; known: {', '.join(ids)}")
        return self

    def region(self, region_id: str) -> Region:
        for r in self.regions:
            if r.id == region_id:
                return r
        known = ", ".join(r.id for r in self.regions)
        raise KeyError(f"unknown region {region_id!r}; known: {known}")

    @property
    def control_url(self) -> str:
        return f"http://{self.control_address}:{self.control_port}"

    @property
    def home(self) -> Region:
        return self.region(self.home_region)

    @classmethod
    def load(cls, path: Path | None = None) -> Topology:
        """The defaults, overridden by the TOML file at `path` when given (or a JSON one, as a tool that
        derives a topology from another writes it: `model_dump_json`)."""
        if path is None:
            return cls()
        if path.suffix == ".json":
            return cls.model_validate_json(path.read_bytes())
        with path.open("rb") as f:
            return cls.model_validate(tomllib.load(f))


DEFAULT_REGIONS: tuple[Region, ...] = (
    Region(id="eu-west-1", name="Ireland", flag="🇮🇪", address="127.0.1.1", location=(53.3, -6.3)),
    Region(id="ap-southeast-1", name="Singapore", flag="🇸🇬", address="127.0.2.1", location=(1.35, 103.8)),
    Region(id="us-east-1", name="N. Virginia", flag="🇺🇸", address="127.0.3.1", location=(38.9, -77.4)),
)
