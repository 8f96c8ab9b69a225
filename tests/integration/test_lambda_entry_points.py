"""The Lambda entry points (issue 17), in-process, with API Gateway (HTTP API 2.0) and DynamoDB Streams
events against moto (DynamoDB, Secrets Manager) and a real Redis: GET /books, a checkout with an
Idempotency-Key, best sellers counted from the orders stream's records, and the books stream indexed
into the region's shared search index, which the API function reads."""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any, cast

import boto3
import botocore.config
import pytest
from mangum import Mangum
from moto import mock_aws

from bookstore.cloud.lambdas import search as search_function
from bookstore.cloud.lambdas.bestsellers import count
from bookstore.cloud.lambdas.compose import (
    API_CONSUMERS,
    LambdaEnvironment,
    api_app,
    build_search,
    build_services,
    lambda_app,
)
from bookstore.domain.errors import ValidationError
from bookstore.domain.orders import OrderLine
from bookstore.region.services import RegionServices
from bookstore.services.catalog import seed_books
from tests.support.aws import fake_credentials
from tests.support.mariadb_server import mariadb_server
from tests.support.redis_server import redis_server

REGION = "eu-west-1"
PASSWORD = "lambda-password-1"
# What the region's stack sets for its functions (bookstore.cloud.compute), Redis's URL apart.
ENVIRONMENT = {
    "BOOKSTORE_REGION": REGION,
    "BOOKSTORE_HOME_REGION": REGION,
    "BOOKSTORE_TABLE_PREFIX": "bookstore-",
    "BOOKSTORE_SEARCH_TABLE": "bookstore-search-eu-west-1",
}


@pytest.fixture
def services(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[RegionServices]:
    fake_credentials(tmp_path, monkeypatch)
    # Lambda's /tmp is the function's own: here each test's. tempfile caches the directory at its first
    # use in the process, so TMPDIR alone is not enough (two tests then shared /tmp/bookstore's lock).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with redis_server() as url, mock_aws():
        env = LambdaEnvironment.from_env({**ENVIRONMENT, "BOOKSTORE_REDIS_URL": url})
        built = build_services(env, secrets=boto3.client("secretsmanager", region_name=REGION))
        try:
            built.catalog.load(seed_books())
            built.identity.add_user("lambda@example.com", PASSWORD)
            yield built
        finally:
            built.close()


def http_event(
    method: str, path: str, body: Any = None, headers: dict[str, str] | None = None
) -> dict[str, Any]:
    """An API Gateway HTTP API (payload 2.0) event, as the $default route hands it to the function."""
    return {
        "version": "2.0",
        "routeKey": "$default",
        "rawPath": path,
        "rawQueryString": "",
        "headers": {
            "host": "api.bookstore.example.com",
            "content-type": "application/json",
            **(headers or {}),
        },
        "requestContext": {
            "accountId": "123456789012",
            "apiId": "api",
            "domainName": "api.bookstore.example.com",
            "http": {
                "method": method,
                "path": path,
                "protocol": "HTTP/1.1",
                "sourceIp": "192.0.2.1",
                "userAgent": "t",
            },
            "requestId": "r",
            "routeKey": "$default",
            "stage": "$default",
            "timeEpoch": 0,
        },
        "body": None if body is None else json.dumps(body),
        "isBase64Encoded": False,
    }


def stream_event(services: RegionServices, table: str = "orders") -> dict[str, Any]:
    """Every record of a table's stream, as an event source mapping hands them to a function."""
    config = botocore.config.Config(account_id_endpoint_mode="disabled")
    client = boto3.client("dynamodb", region_name=REGION, config=config)
    streams = boto3.client("dynamodbstreams", region_name=REGION, config=config)
    arn = client.describe_table(TableName=f"bookstore-{table}")["Table"]["LatestStreamArn"]
    shard = streams.describe_stream(StreamArn=arn)["StreamDescription"]["Shards"][0]["ShardId"]
    iterator = streams.get_shard_iterator(StreamArn=arn, ShardId=shard, ShardIteratorType="TRIM_HORIZON")
    records = streams.get_records(ShardIterator=iterator["ShardIterator"])["Records"]
    for record in records:
        # Lambda's events carry the time in epoch seconds where boto3 reads a datetime.
        created = record["dynamodb"]["ApproximateCreationDateTime"]
        record["dynamodb"]["ApproximateCreationDateTime"] = created.timestamp()
        record["eventSourceARN"] = arn
    return {"Records": records}


def test_the_api_function_serves_the_catalog_and_an_idempotent_checkout(services: RegionServices) -> None:
    mangum = Mangum(api_app(services), lifespan="auto")

    def handler(event: dict[str, Any], context: None) -> dict[str, Any]:
        answer: dict[str, Any] = mangum(event, cast(Any, context))
        return answer

    books = handler(http_event("GET", "/books"), None)
    assert books["statusCode"] == 200 and len(json.loads(books["body"])) == 56
    signin = handler(
        http_event("POST", "/auth/signin", {"email": "lambda@example.com", "password": PASSWORD}), None
    )
    token = json.loads(signin["body"])["accessToken"]
    order = {"books": [{"bookId": "bk-cook-001", "quantity": 2}]}
    auth = {"authorization": f"Bearer {token}", "idempotency-key": "checkout-1"}
    first = handler(http_event("POST", "/orders", order, auth), None)
    again = handler(http_event("POST", "/orders", order, auth), None)
    assert (first["statusCode"], again["statusCode"]) == (201, 200)
    assert json.loads(first["body"])["orderId"] == json.loads(again["body"])["orderId"]


def test_the_api_function_answers_as_broken_while_its_environment_says_so(services: RegionServices) -> None:
    # `bookstore aws drill`'s break: the same 403 as the local api-break switch; the paths that are not
    # behind the mapping go on to the app (which has no /status on Lambda: its 404, not the break's 403).
    broken = Mangum(cast(Any, lambda_app(services, REGION, {"BOOKSTORE_API_BROKEN": "1"})), lifespan="auto")
    books = broken(http_event("GET", "/books"), cast(Any, None))
    assert books["statusCode"] == 403 and "not mapped" in json.loads(books["body"])["message"]
    assert broken(http_event("GET", "/status"), cast(Any, None))["statusCode"] == 404
    repaired = Mangum(cast(Any, lambda_app(services, REGION, {})), lifespan="auto")
    assert repaired(http_event("GET", "/books"), cast(Any, None))["statusCode"] == 200


def test_the_bestsellers_function_counts_the_orders_stream(services: RegionServices) -> None:
    buyer = services.identity.add_user("buyer@example.com", PASSWORD).user_id
    services.checkout.place(buyer, [OrderLine("bk-cook-001", 3)], "k1")
    # The ranking has no cursor yet: the first batch rebuilds it from the table.
    assert count(services, stream_event(services)) == {"batchItemFailures": []}
    assert services.bestsellers.top(5) == [{"bookId": "bk-cook-001", "quantity": 3}]
    services.checkout.place(buyer, [OrderLine("bk-cook-002", 1)], "k2")
    # Every record again (a retry of the first batch included): nothing counts twice.
    assert count(services, stream_event(services)) == {"batchItemFailures": []}
    assert services.bestsellers.top(5) == [
        {"bookId": "bk-cook-001", "quantity": 3},
        {"bookId": "bk-cook-002", "quantity": 1},
    ]


def test_the_search_function_feeds_the_index_the_api_function_reads(services: RegionServices) -> None:
    api = Mangum(api_app(services), lifespan="auto")

    def search(q: str) -> list[str]:
        event = http_event("GET", "/search")
        event["rawQueryString"] = f"q={q}"
        answer: dict[str, Any] = api(event, cast(Any, None))
        assert answer["statusCode"] == 200
        return [book["id"] for book in json.loads(answer["body"])]

    # The API indexes nothing itself: its instances share the index the search function feeds.
    assert "search" not in API_CONSUMERS
    assert search("bread") == []
    function = build_search(LambdaEnvironment.from_env({**ENVIRONMENT, "BOOKSTORE_REDIS_URL": "redis://x"}))
    # The index has no cursor yet: the first batch rebuilds it from the table.
    assert search_function.index(function, stream_event(services, "books")) == {"batchItemFailures": []}
    assert search("bread")[0] == "bk-cook-003"
    books = services.tables["books"]
    books.update({"id": "bk-cook-003"}, {"name": "Sourdough Loaves"})
    books.delete({"id": "bk-cook-001"})
    # Every record again (the first batch's retried with them): the index ends as the table.
    assert search_function.index(function, stream_event(services, "books")) == {"batchItemFailures": []}
    assert "bk-cook-003" not in search("bread") and search("sourdough") == ["bk-cook-003"]
    # The API leaves out a deleted book by itself: the index must have dropped it too.
    assert "bk-cook-001" not in function.index.search("salt smoke")
    assert function.index.cursor() is not None


def test_a_function_without_its_environment_says_what_is_missing() -> None:
    with pytest.raises(ValidationError, match="BOOKSTORE_REDIS_URL"):
        LambdaEnvironment.from_env(
            {"BOOKSTORE_REGION": REGION, "BOOKSTORE_HOME_REGION": REGION, "BOOKSTORE_TABLE_PREFIX": "b-"}
        )


def test_the_blog_on_the_regions_aurora_cluster_is_served_by_the_function(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A MariaDB server stands for Aurora MySQL: the blog's credentials come from Secrets Manager."""
    fake_credentials(tmp_path, monkeypatch)
    # Lambda's /tmp is the function's own: here each test's. tempfile caches the directory at its first
    # use in the process, so TMPDIR alone is not enough (two tests then shared /tmp/bookstore's lock).
    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    with mariadb_server() as db, redis_server() as url, mock_aws():
        with db.connect() as conn, conn.cursor() as cursor:
            cursor.execute("CREATE DATABASE blog CHARACTER SET utf8mb4 COLLATE utf8mb4_bin")
            cursor.execute("CREATE USER 'bookstore'@'%' IDENTIFIED BY 'aurora-password'")
            cursor.execute("GRANT ALL ON blog.* TO 'bookstore'@'%'")
        secrets = boto3.client("secretsmanager", region_name=REGION)
        secrets.create_secret(
            Name="bookstore/blog/admin",
            SecretString=json.dumps({"username": "bookstore", "password": "aurora-password"}),
        )
        env = LambdaEnvironment.from_env(
            {
                "BOOKSTORE_REGION": REGION,
                "BOOKSTORE_HOME_REGION": REGION,
                "BOOKSTORE_TABLE_PREFIX": "bookstore-",
                "BOOKSTORE_REDIS_URL": url,
                "BOOKSTORE_BLOG_HOST": db.host,
                "BOOKSTORE_BLOG_SECRET": "bookstore/blog/admin",
            }
        )
        services = build_services(env, secrets=secrets, blog_port=db.port)
        try:
            services.catalog.load(seed_books())
            mangum = Mangum(api_app(services), lifespan="auto")
            posts = mangum(http_event("GET", "/blog/wp-json/wp/v2/posts"), cast(Any, None))
            assert posts["statusCode"] == 200 and len(json.loads(posts["body"])) > 0
            with db.connect("blog") as conn, conn.cursor() as cursor:
                cursor.execute("SELECT COUNT(*) FROM blog_posts")
                # The posts the function answers are the rows of the cluster's database.
                assert str(cursor.fetchone()[0]) == posts["headers"]["x-wp-total"]
        finally:
            services.close()
