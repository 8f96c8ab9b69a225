"""The Lambda processes' one composition root: a region's services on the AWS engines, from the
environment the region's stack gives its functions (bookstore.cloud.compute)."""

from __future__ import annotations

import asyncio
import json
import os
import tempfile
from collections.abc import AsyncIterator, Mapping
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from fastapi import FastAPI
from starlette.types import ASGIApp

from bookstore import tables
from bookstore.api.app import create_app
from bookstore.blog.port import SqlDatabase
from bookstore.config import Region, Storage, Topology
from bookstore.domain.errors import ValidationError
from bookstore.ports import SearchIndex
from bookstore.region.compose import build_region
from bookstore.region.faults import BrokenApi, api_broken_by_environment
from bookstore.region.services import RegionServices
from bookstore.services.search import BookSearch

# The variables the stack sets (bookstore.cloud.compute._environment), and what each one is.
VARIABLES = {
    "BOOKSTORE_REGION": "the AWS region the function runs in",
    "BOOKSTORE_HOME_REGION": "the home region",
    "BOOKSTORE_TABLE_PREFIX": "the prefix of the DynamoDB tables",
    "BOOKSTORE_REDIS_URL": "the URL of the region's Redis (ElastiCache) for best sellers",
}
# The database of the blog on the Aurora cluster (bookstore.cloud.data), and MySQL's port.
BLOG_DATABASE = "blog"
BLOG_PORT = 3306
# The stream consumers a Lambda API runs beside its requests; best sellers and search have functions of
# their own (the search index is a table the region's instances share, fed by the search function).
API_CONSUMERS = ("catalog",)


@dataclass(frozen=True)
class LambdaEnvironment:
    """What a function learns from its environment; the blog's database when the stack has a blog."""

    region: str
    home: str
    table_prefix: str
    redis_url: str
    # The Aurora cluster's endpoint in this region and the secret of its credentials (JSON username,
    # password), as the global stack makes it and replicates it to every region.
    blog_host: str | None = None
    blog_secret: str | None = None
    # The region's search index table (bookstore.cloud.compute); by default named after the tables.
    search_table: str | None = None

    @property
    def search_index_table(self) -> str:
        return self.search_table or f"{self.table_prefix}search-{self.region}"

    @classmethod
    def from_env(cls, environ: Mapping[str, str] | None = None) -> LambdaEnvironment:
        env = os.environ if environ is None else environ
        missing = [f"{name} ({what})" for name, what in VARIABLES.items() if not env.get(name)]
        if missing:
            raise ValidationError(f"the function's environment lacks {', '.join(missing)}")
        return cls(
            env["BOOKSTORE_REGION"],
            env["BOOKSTORE_HOME_REGION"],
            env["BOOKSTORE_TABLE_PREFIX"],
            env["BOOKSTORE_REDIS_URL"],
            blog_host=env.get("BOOKSTORE_BLOG_HOST") or None,
            blog_secret=env.get("BOOKSTORE_BLOG_SECRET") or None,
            search_table=env.get("BOOKSTORE_SEARCH_TABLE") or None,
        )

    def topology(self) -> Topology:
        """This region (and the home one) on DynamoDB, Redis and S3; addresses are not used on AWS."""
        ids = dict.fromkeys([self.home, self.region])
        regions = tuple(Region(id=r, name=r, flag="", address="127.0.0.1") for r in ids)
        return Topology(
            regions=regions,
            active=tuple(ids),
            home_region=self.home,
            storage=Storage(
                tables="dynamodb",
                table_prefix=self.table_prefix,
                ranking="redis",
                redis_url=self.redis_url,
                objects="s3",
            ),
        )


def build_services(
    env: LambdaEnvironment, *, secrets: Any | None = None, blog_port: int = BLOG_PORT
) -> RegionServices:
    """The region's services in the function's /tmp, its signing key in Secrets Manager (shared by every
    instance of the function in the region), the search index in the region's index table (shared too,
    fed by the search function), the blog on the region's Aurora cluster when there is one."""
    import boto3

    from bookstore.storage.secretsmanager.keys import SecretsManagerKeys

    if secrets is None:
        secrets = boto3.client("secretsmanager", region_name=env.region)
    return build_region(
        env.topology(),
        env.region,
        Path(tempfile.gettempdir()) / "bookstore",
        signing_keys=SecretsManagerKeys(secrets),
        blog_sql=_blog_database(env, secrets, blog_port),
        search_index=search_index(env),
    )


def _dynamodb(env: LambdaEnvironment, service: str = "dynamodb") -> Any:
    import boto3
    import botocore.config

    # Account-id endpoints are off, as for the region's tables (region.compose._aws_client).
    config = botocore.config.Config(account_id_endpoint_mode="disabled")
    return boto3.client(service, region_name=env.region, config=config)


def search_index(env: LambdaEnvironment) -> SearchIndex:
    """The region's search index table, shared by its functions (the stack creates it; tests too)."""
    from bookstore.storage.dynamodb.search import DynamoSearchIndex

    index = DynamoSearchIndex(env.search_index_table, client=_dynamodb(env))
    index.ensure_table()
    return index


def build_search(env: LambdaEnvironment) -> BookSearch:
    """The search function's one service: the books table's stream indexed into the region's index; no
    Redis, blog or signing key (its role reaches none of them)."""
    from bookstore.storage.dynamodb.tables import DynamoTable

    books = DynamoTable(
        tables.BOOKS,
        client=_dynamodb(env),
        streams_client=_dynamodb(env, "dynamodbstreams"),
        prefix=env.table_prefix,
    )
    return BookSearch(books, search_index(env), env.region, cached=False)


def _blog_database(env: LambdaEnvironment, secrets: Any, port: int) -> SqlDatabase | None:
    """The blog's database on Aurora: replicated by Aurora (a secondary region's cluster is read-only)."""
    if env.blog_host is None:
        return None
    from bookstore.storage.mysql.sql import MysqlSql

    if env.blog_secret is None:
        raise ValidationError("BOOKSTORE_BLOG_HOST is set without BOOKSTORE_BLOG_SECRET (its credentials)")
    credentials = json.loads(secrets.get_secret_value(SecretId=env.blog_secret)["SecretString"])
    return MysqlSql(env.blog_host, port, credentials["username"], credentials["password"], BLOG_DATABASE)


def api_app(services: RegionServices) -> FastAPI:
    """The region's API as the Lambda serves it: the catalog's cache follows the books stream while the
    function runs (Lambda freezes it between invocations; a thawed function catches up on its first
    poll); searches read the region's shared index."""
    app = create_app(services)

    @asynccontextmanager
    async def lifespan(_: FastAPI) -> AsyncIterator[None]:
        await asyncio.to_thread(services.identity.ensure_signing_key)
        stop = asyncio.Event()
        consumers = services.consumers
        tasks = [asyncio.create_task(consumers[name].run(stop), name=name) for name in API_CONSUMERS]
        try:
            yield
        finally:
            stop.set()
            await asyncio.gather(*tasks, return_exceptions=True)

    app.router.lifespan_context = lifespan
    return app


def lambda_app(services: RegionServices, region: str, environ: Mapping[str, str] | None = None) -> ASGIApp:
    """api_app as the API function serves it: answering as a broken API (module 4's removed mapping)
    while its environment says so, which `bookstore aws drill` sets and removes."""
    app = api_app(services)
    return BrokenApi(app, region) if api_broken_by_environment(environ) else app
