"""`bookstore aws promote-blog` (issue 17, module 4 on Aurora): the secondary cluster of the blog's global
database detached so it takes writes.

Against moto as far as it goes: the lookup of the global database and its members, and every refusal.
moto's RemoveFromGlobalCluster answers but leaves the cluster in the global database, so the success
path (the cluster promoting, then available on its own) runs against a fake RDS that answers as AWS
documents it.
"""

from __future__ import annotations

from typing import Any

import boto3
import pytest
from moto import mock_aws

from bookstore.cloud.blog_failover import promote_blog
from bookstore.cloud.settings import CloudSettings
from bookstore.config import Topology
from bookstore.domain.errors import NotFound, StorageError
from tests.support.aws import fake_credentials

EU, AP = "eu-west-1", "ap-southeast-1"


def settings() -> CloudSettings:
    topology = Topology(active=(EU, AP), home_region=EU)
    return CloudSettings.from_topology(topology, domain="shop.example.com", hosted_zone_id="Z123")


def test_promotion_refusals_against_moto(tmp_path: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():

        def clients(service: str, region: str) -> Any:
            return boto3.client(service, region_name=region)

        with pytest.raises(NotFound, match="global database bookstore-blog is not deployed"):
            promote_blog(settings(), clients, AP)
        eu, ap = clients("rds", EU), clients("rds", AP)
        eu.create_global_cluster(GlobalClusterIdentifier=settings().global_cluster, Engine="aurora-mysql")
        eu.create_db_cluster(
            DBClusterIdentifier="blog-eu",
            Engine="aurora-mysql",
            MasterUsername="admin",
            MasterUserPassword="a-long-password",
            GlobalClusterIdentifier=settings().global_cluster,
        )
        with pytest.raises(NotFound, match="no cluster in ap-southeast-1"):
            promote_blog(settings(), clients, AP)
        with pytest.raises(StorageError, match="primary already"):
            promote_blog(settings(), clients, EU)
        with pytest.raises(NotFound, match="not a region of this deployment"):
            promote_blog(settings(), clients, "us-east-1")
        ap.create_db_cluster(
            DBClusterIdentifier="blog-ap",
            Engine="aurora-mysql",
            GlobalClusterIdentifier=settings().global_cluster,
        )
        # The request moto takes: the secondary's ARN detached from the global database.
        calls: list[dict[str, Any]] = []
        real = clients("rds", AP)

        class Watched:
            def __getattr__(self, name: str) -> Any:
                return getattr(real, name)

            def remove_from_global_cluster(self, **request: Any) -> Any:
                calls.append(request)
                raise RuntimeError("stop here: moto does not detach")

        with pytest.raises(StorageError, match="promoting ap-southeast-1's blog cluster"):
            promote_blog(settings(), lambda service, region: Watched(), AP)
        assert calls == [
            {
                "GlobalClusterIdentifier": "bookstore-blog",
                "DbClusterIdentifier": "arn:aws:rds:ap-southeast-1:123456789012:cluster:blog-ap",
            }
        ]


class AwsLikeRds:
    """RDS as AWS documents RemoveFromGlobalCluster: the cluster leaves the global database, promotes
    for a while, then is available on its own."""

    def __init__(self) -> None:
        self.arn = "arn:aws:rds:ap-southeast-1:111122223333:cluster:blog-ap"
        self.detached = False
        self.polls = 0

    def describe_global_clusters(self, GlobalClusterIdentifier: str) -> dict[str, Any]:
        members = [{"DBClusterArn": "arn:aws:rds:eu-west-1:111122223333:cluster:blog-eu", "IsWriter": True}]
        if not self.detached:
            members.append({"DBClusterArn": self.arn, "IsWriter": False})
        return {
            "GlobalClusters": [
                {"GlobalClusterIdentifier": GlobalClusterIdentifier, "GlobalClusterMembers": members}
            ]
        }

    def remove_from_global_cluster(self, GlobalClusterIdentifier: str, DbClusterIdentifier: str) -> None:
        assert DbClusterIdentifier == self.arn
        self.detached = True

    def describe_db_clusters(self, DBClusterIdentifier: str) -> dict[str, Any]:
        self.polls += 1
        status = "promoting" if self.polls < 3 else "available"
        cluster = {"Status": status, "Endpoint": "blog-ap.cluster-x.ap-southeast-1.rds.amazonaws.com"}
        if not self.detached:
            cluster["GlobalClusterIdentifier"] = "bookstore-blog"
        return {"DBClusters": [cluster]}


def test_the_secondary_is_detached_and_waited_for_until_it_takes_writes() -> None:
    rds = AwsLikeRds()
    said: list[str] = []
    done = promote_blog(settings(), lambda service, region: rds, AP, said.append, poll_s=0.01)
    assert rds.detached and rds.polls == 3
    assert done["region"] == AP and done["cluster"] == rds.arn
    assert done["endpoint"].startswith("blog-ap.cluster-")
    assert said[0].startswith(f"detach {rds.arn} from bookstore-blog")
    assert "  ap-southeast-1's blog cluster: promoting" in said
    assert said[-1].startswith("  ap-southeast-1's blog cluster takes writes")
    # Promoted: a second promotion finds nothing to detach.
    with pytest.raises(NotFound, match="already promoted"):
        promote_blog(settings(), lambda service, region: rds, AP, poll_s=0.01)


def test_a_promotion_that_does_not_finish_says_so() -> None:
    rds = AwsLikeRds()
    rds.polls = -10_000  # promoting for ever
    with pytest.raises(StorageError, match="still promoting after"):
        promote_blog(settings(), lambda service, region: rds, AP, poll_s=0.001, timeout_s=0.05)
