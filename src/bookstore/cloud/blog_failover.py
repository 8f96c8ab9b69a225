"""`bookstore aws promote-blog`: module 4's promotion of the blog's database on AWS, as the workshop does it
in an outage: the region's secondary Aurora cluster is detached from the global database and so becomes
a standalone cluster that takes writes (its endpoint, which the region's blog function uses, unchanged).

Detaching is the path that works while the primary's region is down (Aurora's managed switchover needs
the primary healthy). Like the workshop's promotion it is one way: the old primary, when it is back, is a
cluster of its own; making it a secondary again means a new global database from the promoted one.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from bookstore.cloud.settings import CloudSettings
from bookstore.domain.errors import NotFound, StorageError

Clients = Callable[[str, str], Any]
# Aurora takes minutes to promote (seed-notes: "promotion takes minutes").
PROMOTE_TIMEOUT_S = 30 * 60.0
POLL_S = 15.0


def promote_blog(
    settings: CloudSettings,
    clients: Clients,
    region: str,
    progress: Callable[[str], None] = lambda _: None,
    *,
    poll_s: float = POLL_S,
    timeout_s: float = PROMOTE_TIMEOUT_S,
) -> dict[str, Any]:
    """Detach `region`'s blog cluster from the global database and wait until it takes writes."""
    if region not in settings.regions:
        raise NotFound(f"{region} is not a region of this deployment ({', '.join(settings.regions)})")
    rds = clients("rds", region)
    started = time.monotonic()
    try:
        found = rds.describe_global_clusters(GlobalClusterIdentifier=settings.global_cluster)[
            "GlobalClusters"
        ]
    except Exception as exc:
        raise StorageError(f"the blog's global database {settings.global_cluster}: {exc}") from exc
    if not found:
        raise NotFound(
            f"the blog's global database {settings.global_cluster} is not deployed (bookstore aws deploy)"
        )
    members = found[0].get("GlobalClusterMembers", [])
    member = next((m for m in members if f":rds:{region}:" in m["DBClusterArn"]), None)
    if member is None:
        raise NotFound(
            f"the global database {settings.global_cluster} has no cluster in {region} (already promoted, "
            "or the blog is not deployed there)"
        )
    arn = member["DBClusterArn"]
    if member.get("IsWriter"):
        raise StorageError(f"{region}'s cluster is the global database's primary already: nothing to promote")
    progress(
        f"detach {arn} from {settings.global_cluster}: it becomes a standalone cluster that takes writes"
    )
    try:
        rds.remove_from_global_cluster(
            GlobalClusterIdentifier=settings.global_cluster, DbClusterIdentifier=arn
        )
    except Exception as exc:
        raise StorageError(f"promoting {region}'s blog cluster: {exc}") from exc
    deadline = started + timeout_s
    while True:
        cluster = rds.describe_db_clusters(DBClusterIdentifier=arn)["DBClusters"][0]
        status = cluster.get("Status")
        if status == "available" and not cluster.get("GlobalClusterIdentifier"):
            break
        if time.monotonic() > deadline:
            raise StorageError(f"{region}'s blog cluster is still {status} after {timeout_s:.0f} s")
        progress(f"  {region}'s blog cluster: {status}")
        time.sleep(poll_s)
    took = time.monotonic() - started
    progress(f"  {region}'s blog cluster takes writes ({took:.0f} s)")
    return {
        "region": region,
        "cluster": arn,
        "endpoint": cluster.get("Endpoint"),
        "tookSeconds": round(took, 1),
    }
