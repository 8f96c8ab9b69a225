"""A region's stack: its network, data services, storefront bucket and compute, and what the edge stack
needs from it (as outputs)."""

from __future__ import annotations

from bookstore.cloud.cfn import Json, att, ref, string_parameter, sub, template
from bookstore.cloud.compute import compute
from bookstore.cloud.data import blog_database, cache
from bookstore.cloud.network import network
from bookstore.cloud.objects import HAS_DISTRIBUTION, REPLICATE, site_bucket
from bookstore.cloud.settings import CloudSettings


def region_template(settings: CloudSettings, region: str) -> Json:
    parameters: Json = {
        "ArtifactBucket": string_parameter("The bucket (in this region) holding the Lambda package"),
        "ArtifactKey": string_parameter("The Lambda package's key, from `make lambda`"),
        "OrdersStreamArn": string_parameter("The stream of this region's replica of the orders table"),
        "BooksStreamArn": string_parameter("The stream of this region's replica of the books table"),
        "EnableReplication": {
            "Type": "String",
            "AllowedValues": ["true", "false"],
            "Default": "false",
            "Description": "true once every region's bucket exists and is versioned (second pass)",
        },
        "DistributionArn": string_parameter(
            "The CloudFront distribution reading the bucket (second pass)", ""
        ),
    }
    conditions: Json = {
        REPLICATE: {"Fn::Equals": [ref("EnableReplication"), "true"]},
        HAS_DISTRIBUTION: {"Fn::Not": [{"Fn::Equals": [ref("DistributionArn"), ""]}]},
    }
    resources: Json = {
        **network(secrets_endpoint=settings.blog),
        **cache(settings),
        **site_bucket(settings, region),
        **compute(settings, region),
    }
    if settings.blog:
        resources.update(blog_database(settings, region))
    outputs: Json = {
        "ApiHost": sub("${ApiApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}"),
        "ApiRegionalDomainName": att("ApiDomain", "RegionalDomainName"),
        "ApiRegionalHostedZoneId": att("ApiDomain", "RegionalHostedZoneId"),
        "SiteBucketName": ref("SiteBucket"),
        "SiteBucketDomainName": att("SiteBucket", "RegionalDomainName"),
        "SearchIndexTableName": ref("SearchIndexTable"),
    }
    if settings.blog:
        outputs["BlogHost"] = sub("${BlogApi}.execute-api.${AWS::Region}.${AWS::URLSuffix}")
        outputs["BlogRegionalDomainName"] = att("BlogDomain", "RegionalDomainName")
        outputs["BlogRegionalHostedZoneId"] = att("BlogDomain", "RegionalHostedZoneId")
        outputs["BlogClusterEndpoint"] = att("BlogCluster", "Endpoint.Address")
    role = "home region, blog primary" if region == settings.home else "blog secondary"
    return template(
        f"Bookstore in {region} ({role if settings.blog else 'no blog'}): network, Redis, storefront bucket, "
        "API and consumers",
        resources,
        parameters=parameters,
        conditions=conditions,
        outputs=outputs,
    )
