"""The edge stack, in the home region: Route 53 health checks, latency records for the API and a
failover pair for the blog (as module 3 of the workshop), and CloudFront with an origin group over two
regions' buckets and the API as a second origin."""

from __future__ import annotations

from bookstore.cloud.cfn import Json, att, logical_id, ref, resource, string_parameter, template
from bookstore.cloud.settings import CloudSettings

# Route 53 as the workshop sets it: a check every 10 s, 3 failures to call a region unhealthy.
CHECK_INTERVAL_S = 10
FAILURE_THRESHOLD = 3
HEALTH_PATH = "/books"
# CloudFront fails over to the secondary origin on these answers of the primary (and on no answer).
FAILOVER_STATUS_CODES = (403, 404, 500, 502, 503, 504)
# AWS managed policies: caching optimised for the storefront; nothing cached and every viewer header
# but Host passed on for the API.
CACHING_OPTIMIZED = "658327ea-f89d-4fab-a63d-7e88639e58f6"
CACHING_DISABLED = "4135ea2d-6df8-44a3-9df3-4b5a84be39ad"
ALL_VIEWER_EXCEPT_HOST = "b689b0a8-53d0-40ab-baf2-68738e2966ac"
# The storefront calls the API under /api/ (as through our edge); the function strips the prefix.
STRIP_API = """function handler(event) {
  var request = event.request;
  request.uri = request.uri.replace(/^\\/api/, '') || '/';
  return request;
}"""


def _p(kind: str, region: str) -> str:
    return f"{kind}{logical_id(region)}"


def edge_parameters(settings: CloudSettings) -> Json:
    """What the edge needs from each region's stack outputs (the deploy passes them)."""
    params: Json = {}
    for region in settings.regions:
        params[_p("ApiHost", region)] = string_parameter(f"{region}: the API's execute-api host")
        params[_p("ApiDomain", region)] = string_parameter(f"{region}: api.<domain>'s regional domain name")
        params[_p("ApiZone", region)] = string_parameter(f"{region}: its hosted zone id")
    if settings.blog:
        # Only the primary is health-checked: Route 53 answers the secondary when the primary fails.
        params[_p("BlogHost", settings.home)] = string_parameter(
            f"{settings.home}: the blog's execute-api host"
        )
    for region in (settings.home, settings.blog_secondary):
        params[_p("SiteDomain", region)] = string_parameter(f"{region}: the site bucket's regional domain")
        if settings.blog:
            params[_p("BlogDomain", region)] = string_parameter(
                f"{region}: blog.<domain>'s regional domain name"
            )
            params[_p("BlogZone", region)] = string_parameter(f"{region}: its hosted zone id")
    return params


def _health_check(host_param: str, what: str) -> Json:
    return resource(
        "AWS::Route53::HealthCheck",
        {
            "HealthCheckConfig": {
                "Type": "HTTPS",
                "FullyQualifiedDomainName": ref(host_param),
                "ResourcePath": HEALTH_PATH,
                "RequestInterval": CHECK_INTERVAL_S,
                "FailureThreshold": FAILURE_THRESHOLD,
            },
            "HealthCheckTags": [{"Key": "Name", "Value": what}],
        },
    )


def _alias(domain_param: str, zone_param: str) -> Json:
    return {"DNSName": ref(domain_param), "HostedZoneId": ref(zone_param), "EvaluateTargetHealth": False}


def routing(settings: CloudSettings) -> Json:
    resources: Json = {}
    for region in settings.regions:
        check = _p("ApiCheck", region)
        resources[check] = _health_check(_p("ApiHost", region), f"bookstore api {region}")
        resources[_p("ApiLatency", region)] = resource(
            "AWS::Route53::RecordSet",
            {
                "HostedZoneId": settings.hosted_zone_id,
                "Name": settings.api_host(),
                "Type": "A",
                "SetIdentifier": region,
                "Region": region,
                "HealthCheckId": ref(check),
                "AliasTarget": _alias(_p("ApiDomain", region), _p("ApiZone", region)),
            },
        )
    if settings.blog:
        for region, role in ((settings.home, "PRIMARY"), (settings.blog_secondary, "SECONDARY")):
            record: Json = {
                "HostedZoneId": settings.hosted_zone_id,
                "Name": settings.blog_host(),
                "Type": "A",
                "SetIdentifier": f"blog-{role.lower()}",
                "Failover": role,
                "AliasTarget": _alias(_p("BlogDomain", region), _p("BlogZone", region)),
            }
            if role == "PRIMARY":
                resources["BlogCheck"] = _health_check(_p("BlogHost", region), f"bookstore blog {region}")
                record["HealthCheckId"] = ref("BlogCheck")
            resources[f"Blog{role.title()}"] = resource("AWS::Route53::RecordSet", record)
    return resources


def cdn(settings: CloudSettings) -> Json:
    primary, secondary = settings.home, settings.blog_secondary
    s3_origins = [
        {
            "Id": f"site-{region}",
            "DomainName": ref(_p("SiteDomain", region)),
            "S3OriginConfig": {"OriginAccessIdentity": ""},
            "OriginAccessControlId": att("SiteAccess", "Id"),
        }
        for region in (primary, secondary)
    ]
    api_origin = {
        "Id": "api",
        "DomainName": settings.api_host(),
        "CustomOriginConfig": {"OriginProtocolPolicy": "https-only", "OriginSSLProtocols": ["TLSv1.2"]},
    }
    return {
        "SiteAccess": resource(
            "AWS::CloudFront::OriginAccessControl",
            {
                "OriginAccessControlConfig": {
                    "Name": f"{settings.stack_prefix}-site",
                    "OriginAccessControlOriginType": "s3",
                    "SigningBehavior": "always",
                    "SigningProtocol": "sigv4",
                }
            },
        ),
        "StripApi": resource(
            "AWS::CloudFront::Function",
            {
                "Name": f"{settings.stack_prefix}-strip-api",
                "AutoPublish": True,
                "FunctionCode": STRIP_API,
                "FunctionConfig": {
                    "Comment": "/api/x -> /x for the API origin",
                    "Runtime": "cloudfront-js-2.0",
                },
            },
        ),
        "Distribution": resource(
            "AWS::CloudFront::Distribution",
            {
                "DistributionConfig": {
                    "Enabled": True,
                    "Comment": "The Bookstore's storefront and API",
                    "DefaultRootObject": "index.html",
                    "HttpVersion": "http2and3",
                    "Origins": [*s3_origins, api_origin],
                    "OriginGroups": {
                        "Quantity": 1,
                        "Items": [
                            {
                                "Id": "site",
                                "FailoverCriteria": {
                                    "StatusCodes": {
                                        "Quantity": len(FAILOVER_STATUS_CODES),
                                        "Items": list(FAILOVER_STATUS_CODES),
                                    }
                                },
                                "Members": {
                                    "Quantity": 2,
                                    "Items": [{"OriginId": o["Id"]} for o in s3_origins],
                                },
                            }
                        ],
                    },
                    "DefaultCacheBehavior": {
                        "TargetOriginId": "site",
                        "ViewerProtocolPolicy": "redirect-to-https",
                        # An origin group serves only GET, HEAD and OPTIONS.
                        "AllowedMethods": ["GET", "HEAD", "OPTIONS"],
                        "CachePolicyId": CACHING_OPTIMIZED,
                    },
                    "CacheBehaviors": [
                        {
                            "PathPattern": "/api/*",
                            "TargetOriginId": "api",
                            "ViewerProtocolPolicy": "https-only",
                            "AllowedMethods": ["GET", "HEAD", "OPTIONS", "PUT", "PATCH", "POST", "DELETE"],
                            "CachePolicyId": CACHING_DISABLED,
                            "OriginRequestPolicyId": ALL_VIEWER_EXCEPT_HOST,
                            "FunctionAssociations": [
                                {"EventType": "viewer-request", "FunctionARN": att("StripApi", "FunctionARN")}
                            ],
                        }
                    ],
                }
            },
        ),
    }


def edge_template(settings: CloudSettings) -> Json:
    return template(
        f"Bookstore edge: Route 53 health checks and records in {settings.domain}, CloudFront over "
        f"{settings.home} and {settings.blog_secondary}",
        {**routing(settings), **cdn(settings)},
        parameters=edge_parameters(settings),
        outputs={
            "DistributionDomainName": att("Distribution", "DomainName"),
            "DistributionArn": {
                "Fn::Sub": "arn:${AWS::Partition}:cloudfront::${AWS::AccountId}:distribution/${Distribution}"
            },
        },
    )
