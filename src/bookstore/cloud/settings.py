"""What the AWS version needs beyond the topology (a domain and its Route 53 zone), and its names."""

from __future__ import annotations

from dataclasses import dataclass

from bookstore.config import Topology
from bookstore.domain.errors import ValidationError

# Lambda's Python, the same minor version the project runs on.
PYTHON_RUNTIME = "python3.11"
# Aurora MySQL 3 (MySQL 8.0 compatible) supports global databases; the smallest class that does.
AURORA_ENGINE_VERSION = "8.0.mysql_aurora.3.10.6"
AURORA_INSTANCE_CLASS = "db.r6g.large"
CACHE_NODE_TYPE = "cache.t4g.micro"


@dataclass(frozen=True)
class CloudSettings:
    """The regions (AWS region names, the home one first), the names of everything, and the domain.

    `domain` is a zone the account holds in Route 53 (`hosted_zone_id`): the API answers at
    api.<domain> with latency records per region, the blog at blog.<domain> with a failover pair.
    """

    regions: tuple[str, ...]
    home: str
    domain: str
    hosted_zone_id: str
    table_prefix: str = "bookstore-"
    stack_prefix: str = "bookstore"
    blog: bool = True

    def __post_init__(self) -> None:
        if len(self.regions) < 2:
            raise ValidationError("the AWS version needs at least two regions")
        if self.home not in self.regions:
            raise ValidationError(f"the home region {self.home} is not one of {', '.join(self.regions)}")
        if not self.domain or "." not in self.domain:
            raise ValidationError(
                f"--domain must be a DNS name such as bookstore.example.com, not {self.domain!r}"
            )
        if not self.hosted_zone_id.startswith("Z"):
            raise ValidationError(
                f"--hosted-zone-id must be a Route 53 zone id (Z...), not {self.hosted_zone_id!r}"
            )

    @classmethod
    def from_topology(
        cls, topology: Topology, *, domain: str, hosted_zone_id: str, blog: bool = True
    ) -> CloudSettings:
        """The active regions of the topology, home region first."""
        active = [r for r in topology.active if r != topology.home_region]
        return cls(
            regions=(topology.home_region, *active),
            home=topology.home_region,
            domain=domain,
            hosted_zone_id=hosted_zone_id,
            table_prefix=topology.storage.table_prefix,
            blog=blog,
        )

    @property
    def others(self) -> tuple[str, ...]:
        return tuple(r for r in self.regions if r != self.home)

    @property
    def blog_secondary(self) -> str:
        """The region the blog fails over to (Route 53's SECONDARY): the first after the home region."""
        return self.others[0]

    def stack(self, part: str) -> str:
        return f"{self.stack_prefix}-{part}"

    def site_bucket(self, region: str) -> str:
        """The storefront's bucket in `region`; ${AWS::AccountId} keeps the name the account's own."""
        return f"{self.stack_prefix}-site-${{AWS::AccountId}}-{region}"

    def api_host(self) -> str:
        return f"api.{self.domain}"

    def blog_host(self) -> str:
        return f"blog.{self.domain}"

    @property
    def global_cluster(self) -> str:
        return f"{self.stack_prefix}-blog"
