"""A region's data services on AWS: ElastiCache Redis for best sellers (cluster mode, so the ranking's keys
carry a hash tag) and the blog's Aurora MySQL cluster, a member of the global database."""

from __future__ import annotations

from bookstore.cloud.cfn import Json, ref, resource
from bookstore.cloud.network import SUBNETS
from bookstore.cloud.settings import (
    AURORA_ENGINE_VERSION,
    AURORA_INSTANCE_CLASS,
    CACHE_NODE_TYPE,
    CloudSettings,
)

BLOG_SECRET_NAME = "blog/admin"


def cache(settings: CloudSettings) -> Json:
    return {
        "CacheSubnets": resource(
            "AWS::ElastiCache::SubnetGroup",
            {"Description": "The Bookstore's Redis", "SubnetIds": [ref(s) for s in SUBNETS]},
        ),
        "BestSellers": resource(
            "AWS::ElastiCache::ReplicationGroup",
            {
                "ReplicationGroupDescription": "Best sellers of this region (fed by the Orders stream)",
                "Engine": "redis",
                "CacheNodeType": CACHE_NODE_TYPE,
                "CacheParameterGroupName": "default.redis7.cluster.on",
                "NumNodeGroups": 1,
                "ReplicasPerNodeGroup": 1,
                "AutomaticFailoverEnabled": True,
                "MultiAZEnabled": True,
                "TransitEncryptionEnabled": True,
                "AtRestEncryptionEnabled": True,
                "CacheSubnetGroupName": ref("CacheSubnets"),
                "SecurityGroupIds": [ref("DataSg")],
            },
        ),
    }


def blog_database(settings: CloudSettings, region: str) -> Json:
    """The home region's cluster is the global database's primary (it holds the master credentials);
    every other region's is a read-only secondary that Aurora replicates to and can promote."""
    secret = f"{settings.stack_prefix}/{BLOG_SECRET_NAME}"
    cluster: Json = {
        "Engine": "aurora-mysql",
        "EngineVersion": AURORA_ENGINE_VERSION,
        "GlobalClusterIdentifier": settings.global_cluster,
        "DBSubnetGroupName": ref("DbSubnets"),
        "VpcSecurityGroupIds": [ref("DataSg")],
        "StorageEncrypted": True,
        "BackupRetentionPeriod": 7,
    }
    if region == settings.home:
        cluster["MasterUsername"] = f"{{{{resolve:secretsmanager:{secret}:SecretString:username}}}}"
        cluster["MasterUserPassword"] = f"{{{{resolve:secretsmanager:{secret}:SecretString:password}}}}"
        cluster["DatabaseName"] = "blog"
    else:
        # An encrypted secondary names a key in its own region.
        cluster["KmsKeyId"] = "alias/aws/rds"
    return {
        "DbSubnets": resource(
            "AWS::RDS::DBSubnetGroup",
            {"DBSubnetGroupDescription": "The blog's Aurora cluster", "SubnetIds": [ref(s) for s in SUBNETS]},
        ),
        "BlogCluster": resource(
            "AWS::RDS::DBCluster", cluster, DeletionPolicy="Snapshot", UpdateReplacePolicy="Snapshot"
        ),
        "BlogInstance": resource(
            "AWS::RDS::DBInstance",
            {
                "DBClusterIdentifier": ref("BlogCluster"),
                "DBInstanceClass": AURORA_INSTANCE_CLASS,
                "Engine": "aurora-mysql",
                "PubliclyAccessible": False,
            },
        ),
    }
