"""A region's compute on AWS, as the original: the API and the blog as Lambdas behind API Gateway (HTTP
APIs) on custom domains, the best-sellers consumer as a Lambda fed by the Orders table's stream, and the
search consumer as a Lambda fed by the Books table's stream into the region's search index table, which
the API reads (regional: each region's consumer feeds its own from its replica of the books table)."""

from __future__ import annotations

from bookstore import tables
from bookstore.cloud.cfn import Json, att, ref, resource, sub
from bookstore.cloud.global_stack import table_arn, table_arns
from bookstore.cloud.network import SUBNETS
from bookstore.cloud.settings import PYTHON_RUNTIME, CloudSettings
from bookstore.storage.dynamodb.search import TABLE_KEYS

# The Lambda entry points in the package built by `make lambda`.
API_HANDLER = "bookstore.cloud.lambdas.api"
# The blog is served by the same app (the region's app serves /blog/ too), on blog.<domain>.
BLOG_HANDLER = API_HANDLER
BESTSELLERS_HANDLER = "bookstore.cloud.lambdas.bestsellers"
SEARCH_HANDLER = "bookstore.cloud.lambdas.search"
SEARCH_INDEX = "SearchIndexTable"
# What reading the index takes (the API), and writing it (the search consumer, its rebuild included).
INDEX_READ = ["dynamodb:GetItem", "dynamodb:BatchGetItem", "dynamodb:Query", "dynamodb:DescribeTable"]
INDEX_WRITE = [
    *INDEX_READ,
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:Scan",
]
STREAM_READ = [
    "dynamodb:DescribeStream",
    "dynamodb:GetRecords",
    "dynamodb:GetShardIterator",
    "dynamodb:ListStreams",
]


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
            "Resource": [*table_arns(settings), *table_arns(settings, "/index/*")],
        },
        {"Effect": "Allow", "Action": STREAM_READ, "Resource": table_arns(settings, "/stream/*")},
        # The region's search index: the API reads it, the search function alone writes it.
        {"Effect": "Allow", "Action": INDEX_READ, "Resource": att(SEARCH_INDEX, "Arn")},
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
    return _lambda_role("AWSLambdaVPCAccessExecutionRole", statements)


def _search_role(settings: CloudSettings) -> Json:
    """The search function's: the books table's stream (read by its event source mapping), a scan of the
    books table (a rebuild), and the index; nothing else of the region's data."""
    books = table_arn(settings, tables.BOOKS.name)
    statements: list[Json] = [
        {"Effect": "Allow", "Action": ["dynamodb:Scan", "dynamodb:DescribeTable"], "Resource": books},
        {
            "Effect": "Allow",
            "Action": STREAM_READ,
            "Resource": table_arn(settings, tables.BOOKS.name, "/stream/*"),
        },
        {"Effect": "Allow", "Action": INDEX_WRITE, "Resource": att(SEARCH_INDEX, "Arn")},
    ]
    return _lambda_role("AWSLambdaBasicExecutionRole", statements)


def _lambda_role(managed: str, statements: list[Json]) -> Json:
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
            "ManagedPolicyArns": [sub(f"arn:${{AWS::Partition}}:iam::aws:policy/service-role/{managed}")],
            "Policies": [
                {
                    "PolicyName": "bookstore-data",
                    "PolicyDocument": {"Version": "2012-10-17", "Statement": statements},
                }
            ],
        },
    )


def search_index_table(settings: CloudSettings, region: str) -> Json:
    """The region's search index (storage.dynamodb.search): regional, not global, since each region's
    search function feeds its own from its replica's stream; derived data, so no backups are kept."""
    return resource(
        "AWS::DynamoDB::Table",
        {
            "TableName": f"{settings.table_prefix}search-{region}",
            "BillingMode": "PAY_PER_REQUEST",
            **TABLE_KEYS,
            "SSESpecification": {"SSEEnabled": True},
        },
        DeletionPolicy="Delete",
        UpdateReplacePolicy="Delete",
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
        "BOOKSTORE_SEARCH_TABLE": ref(SEARCH_INDEX),
    }
    if settings.blog:
        variables["BOOKSTORE_BLOG_HOST"] = att("BlogCluster", "Endpoint.Address")
        variables["BOOKSTORE_BLOG_SECRET"] = f"{settings.stack_prefix}/blog/admin"
    return {"Variables": variables}


def _function(
    settings: CloudSettings,
    region: str,
    handler: str,
    what: str,
    timeout_s: int,
    *,
    role: str = "FunctionRole",
    in_vpc: bool = True,
) -> Json:
    properties: Json = {
        "Description": what,
        "Runtime": PYTHON_RUNTIME,
        "Handler": f"{handler}.handler",
        "Code": {"S3Bucket": ref("ArtifactBucket"), "S3Key": ref("ArtifactKey")},
        "Role": att(role, "Arn"),
        "MemorySize": 1024,
        "Timeout": timeout_s,
        "Environment": _environment(settings, region),
    }
    if in_vpc:
        properties["VpcConfig"] = {
            "SubnetIds": [ref(s) for s in SUBNETS],
            "SecurityGroupIds": [ref("LambdaSg")],
        }
    return resource("AWS::Lambda::Function", properties)


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
        SEARCH_INDEX: search_index_table(settings, region),
        "SearchRole": _search_role(settings),
        # Outside the VPC: it reaches nothing there (no Redis, no Aurora), only DynamoDB.
        "SearchFunction": _function(
            settings,
            region,
            SEARCH_HANDLER,
            "Search index from the Books stream",
            300,
            role="SearchRole",
            in_vpc=False,
        ),
        "BooksToSearch": resource(
            "AWS::Lambda::EventSourceMapping",
            {
                "FunctionName": ref("SearchFunction"),
                "EventSourceArn": ref("BooksStreamArn"),
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
