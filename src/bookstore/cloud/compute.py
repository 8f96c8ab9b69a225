"""A region's compute on AWS, as the original: the API and the blog as Lambdas behind API Gateway (HTTP
APIs) on custom domains, and the best-sellers consumer as a Lambda fed by the Orders table's stream."""

from __future__ import annotations

from bookstore.cloud.cfn import Json, att, ref, resource, sub
from bookstore.cloud.global_stack import table_arn_pattern
from bookstore.cloud.network import SUBNETS
from bookstore.cloud.settings import PYTHON_RUNTIME, CloudSettings

# The Lambda entry points in the package built by `make lambda`.
API_HANDLER = "bookstore.cloud.lambdas.api"
# The blog is served by the same app (the region's app serves /blog/ too), on blog.<domain>.
BLOG_HANDLER = API_HANDLER
BESTSELLERS_HANDLER = "bookstore.cloud.lambdas.bestsellers"


def _role(settings: CloudSettings) -> Json:
    secret = (
        "arn:${AWS::Partition}:secretsmanager:${AWS::Region}:${AWS::AccountId}:secret:"
        f"{settings.stack_prefix}/blog/admin-*"
    )
    statements: list[Json] = [
        {
            "Effect": "Allow",
            "Action": [
                "dynamodb:GetItem",
                "dynamodb:PutItem",
                "dynamodb:UpdateItem",
                "dynamodb:DeleteItem",
                "dynamodb:Query",
                "dynamodb:Scan",
                "dynamodb:BatchGetItem",
                "dynamodb:BatchWriteItem",
                "dynamodb:ConditionCheckItem",
                "dynamodb:DescribeTable",
            ],
            "Resource": [
                table_arn_pattern(settings),
                {"Fn::Join": ["", [table_arn_pattern(settings), "/index/*"]]},
            ],
        },
        {
            "Effect": "Allow",
            "Action": [
                "dynamodb:DescribeStream",
                "dynamodb:GetRecords",
                "dynamodb:GetShardIterator",
                "dynamodb:ListStreams",
            ],
            "Resource": {"Fn::Join": ["", [table_arn_pattern(settings), "/stream/*"]]},
        },
        {
            "Effect": "Allow",
            "Action": ["s3:GetObject", "s3:PutObject", "s3:ListBucket"],
            "Resource": [att("SiteBucket", "Arn"), {"Fn::Join": ["", [att("SiteBucket", "Arn"), "/*"]]}],
        },
    ]
    if settings.blog:
        statements.append(
            {"Effect": "Allow", "Action": "secretsmanager:GetSecretValue", "Resource": sub(secret)}
        )
    return resource(
        "AWS::IAM::Role",
        {
            "AssumeRolePolicyDocument": {
                "Version": "2012-10-17",
                "Statement": [
                    {
                        "Effect": "Allow",
                        "Principal": {"Service": "lambda.amazonaws.com"},
                        "Action": "sts:AssumeRole",
                    }
                ],
            },
            "ManagedPolicyArns": [
                sub("arn:${AWS::Partition}:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole")
            ],
            "Policies": [
                {
                    "PolicyName": "bookstore-data",
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    )


def _environment(settings: CloudSettings, region: str) -> Json:
    variables: Json = {
        "BOOKSTORE_REGION": region,
        "BOOKSTORE_HOME_REGION": settings.home,
        "BOOKSTORE_TABLE_PREFIX": settings.table_prefix,
        "BOOKSTORE_SITE_BUCKET": ref("SiteBucket"),
        "BOOKSTORE_REDIS_URL": sub(
            "rediss://${BestSellers.ConfigurationEndPoint.Address}:${BestSellers.ConfigurationEndPoint.Port}"
        ),
    }
    if settings.blog:
        variables["BOOKSTORE_BLOG_HOST"] = att("BlogCluster", "Endpoint.Address")
        variables["BOOKSTORE_BLOG_SECRET"] = f"{settings.stack_prefix}/blog/admin"
    return {"Variables": variables}


def _function(settings: CloudSettings, region: str, handler: str, what: str, timeout_s: int) -> Json:
    return resource(
        "AWS::Lambda::Function",
        {
            "Description": what,
            "Runtime": PYTHON_RUNTIME,
            "Handler": f"{handler}.handler",
            "Code": {"S3Bucket": ref("ArtifactBucket"), "S3Key": ref("ArtifactKey")},
            "Role": att("FunctionRole", "Arn"),
            "MemorySize": 1024,
            "Timeout": timeout_s,
            "Environment": _environment(settings, region),
            "VpcConfig": {"SubnetIds": [ref(s) for s in SUBNETS], "SecurityGroupIds": [ref("LambdaSg")]},
        },
    )


def _http_api(prefix: str, function: str, host: str) -> Json:
    """An HTTP API whose every route goes to `function`, served on `host` (a regional custom domain)."""
    return {
        f"{prefix}Api": resource(
            "AWS::ApiGatewayV2::Api",
            # Quick create: one $default route, a Lambda proxy integration and an auto-deployed stage.
            {
                "Name": sub(f"${{AWS::StackName}}-{prefix.lower()}"),
                "ProtocolType": "HTTP",
                "Target": att(function, "Arn"),
            },
        ),
        f"{prefix}Invoke": resource(
            "AWS::Lambda::Permission",
            {
                "Action": "lambda:InvokeFunction",
                "FunctionName": ref(function),
                "Principal": "apigateway.amazonaws.com",
                "SourceArn": sub(
                    f"arn:${{AWS::Partition}}:execute-api:${{AWS::Region}}:${{AWS::AccountId}}:${{{prefix}Api}}/*"
                ),
            },
        ),
        f"{prefix}Domain": resource(
            "AWS::ApiGatewayV2::DomainName",
            {
                "DomainName": host,
                "DomainNameConfigurations": [
                    {
                        "CertificateArn": ref("Certificate"),
                        "EndpointType": "REGIONAL",
                        "SecurityPolicy": "TLS_1_2",
                    }
                ],
            },
        ),
        f"{prefix}Mapping": resource(
            "AWS::ApiGatewayV2::ApiMapping",
            {"ApiId": ref(f"{prefix}Api"), "DomainName": ref(f"{prefix}Domain"), "Stage": "$default"},
        ),
    }


def compute(settings: CloudSettings, region: str) -> Json:
    hosts = [settings.api_host()] + ([settings.blog_host()] if settings.blog else [])
    resources: Json = {
        "FunctionRole": _role(settings),
        "ApiFunction": _function(settings, region, API_HANDLER, "The Bookstore API", 29),
        "BestSellersFunction": _function(
            settings, region, BESTSELLERS_HANDLER, "Best sellers from the Orders stream", 60
        ),
        "OrdersToBestSellers": resource(
            "AWS::Lambda::EventSourceMapping",
            {
                "FunctionName": ref("BestSellersFunction"),
                "EventSourceArn": ref("OrdersStreamArn"),
                "StartingPosition": "TRIM_HORIZON",
                "BatchSize": 100,
                "FunctionResponseTypes": ["ReportBatchItemFailures"],
            },
        ),
        "Certificate": resource(
            "AWS::CertificateManager::Certificate",
            {
                "DomainName": hosts[0],
                "SubjectAlternativeNames": hosts[1:] or [hosts[0]],
                "ValidationMethod": "DNS",
                # With the zone named, CloudFormation writes the validation records and waits for them.
                "DomainValidationOptions": [
                    {"DomainName": h, "HostedZoneId": settings.hosted_zone_id} for h in hosts
                ],
            },
        ),
        **_http_api("Api", "ApiFunction", settings.api_host()),
    }
    if settings.blog:
        resources["BlogFunction"] = _function(settings, region, BLOG_HANDLER, "The Book Blog", 29)
        resources.update(_http_api("Blog", "BlogFunction", settings.blog_host()))
    return resources
