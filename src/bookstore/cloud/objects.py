"""A region's storefront bucket on AWS: versioned, replicated to every other region's bucket (delete
markers too, as the storefront needs) through a least-privilege role, read by CloudFront only."""

from __future__ import annotations

from bookstore.cloud.cfn import NO_VALUE, Json, att, iff, logical_id, ref, resource, sub
from bookstore.cloud.settings import CloudSettings

REPLICATE = "Replicate"
HAS_DISTRIBUTION = "HasDistribution"


def _bucket_arn(settings: CloudSettings, region: str, objects: bool = False) -> Json:
    return sub(f"arn:${{AWS::Partition}}:s3:::{settings.site_bucket(region)}" + ("/*" if objects else ""))


def _replication(settings: CloudSettings, region: str) -> Json:
    rules = [
        {
            "Id": f"to-{other}",
            "Priority": priority,
            "Status": "Enabled",
            "Filter": {"Prefix": ""},
            "DeleteMarkerReplication": {"Status": "Enabled"},
            "Destination": {"Bucket": _bucket_arn(settings, other)},
        }
        for priority, other in enumerate((r for r in settings.regions if r != region), start=1)
    ]
    return {"Role": att("ReplicationRole", "Arn"), "Rules": rules}


def site_bucket(settings: CloudSettings, region: str) -> Json:
    others = [r for r in settings.regions if r != region]
    return {
        "SiteBucket": resource(
            "AWS::S3::Bucket",
            {
                "BucketName": sub(settings.site_bucket(region)),
                "VersioningConfiguration": {"Status": "Enabled"},
                "PublicAccessBlockConfiguration": {
                    "BlockPublicAcls": True,
                    "BlockPublicPolicy": True,
                    "IgnorePublicAcls": True,
                    "RestrictPublicBuckets": True,
                },
                "BucketEncryption": {
                    "ServerSideEncryptionConfiguration": [
                        {"ServerSideEncryptionByDefault": {"SSEAlgorithm": "AES256"}}
                    ]
                },
                # Rules need the destinations versioned first: the deploy's second pass turns them on.
                "ReplicationConfiguration": iff(REPLICATE, _replication(settings, region), NO_VALUE),
            },
            DeletionPolicy="Retain",
            UpdateReplacePolicy="Retain",
        ),
        "ReplicationRole": resource(
            "AWS::IAM::Role",
            {
                "AssumeRolePolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Effect": "Allow",
                            "Principal": {"Service": "s3.amazonaws.com"},
                            "Action": "sts:AssumeRole",
                        }
                    ],
                },
                "Policies": [
                    {
                        "PolicyName": "replicate-site-bucket",
                        "PolicyDocument": {
                            "Version": "2012-10-17",
                            "Statement": [
                                {
                                    "Effect": "Allow",
                                    "Action": ["s3:GetReplicationConfiguration", "s3:ListBucket"],
                                    "Resource": _bucket_arn(settings, region),
                                },
                                {
                                    "Effect": "Allow",
                                    "Action": [
                                        "s3:GetObjectVersionForReplication",
                                        "s3:GetObjectVersionAcl",
                                        "s3:GetObjectVersionTagging",
                                    ],
                                    "Resource": _bucket_arn(settings, region, objects=True),
                                },
                                {
                                    "Effect": "Allow",
                                    "Action": [
                                        "s3:ReplicateObject",
                                        "s3:ReplicateDelete",
                                        "s3:ReplicateTags",
                                    ],
                                    "Resource": [_bucket_arn(settings, o, objects=True) for o in others],
                                },
                            ],
                        },
                    }
                ],
            },
        ),
        "SiteBucketPolicy": resource(
            "AWS::S3::BucketPolicy",
            {
                "Bucket": ref("SiteBucket"),
                "PolicyDocument": {
                    "Version": "2012-10-17",
                    "Statement": [
                        {
                            "Sid": "CloudFrontReadsTheStorefront",
                            "Effect": "Allow",
                            "Principal": {"Service": "cloudfront.amazonaws.com"},
                            "Action": "s3:GetObject",
                            "Resource": _bucket_arn(settings, region, objects=True),
                            "Condition": {"StringEquals": {"AWS:SourceArn": ref("DistributionArn")}},
                        }
                    ],
                },
            },
            Condition=HAS_DISTRIBUTION,
        ),
    }


def bucket_logical_id(region: str) -> str:
    return f"Site{logical_id(region)}"
