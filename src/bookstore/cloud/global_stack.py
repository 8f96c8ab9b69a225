"""The global stack, in the home region: DynamoDB global tables, the blog's Aurora global database and
its credentials (replicated to every region), created before anything writes to them."""

from __future__ import annotations

from bookstore import tables
from bookstore.cloud.cfn import Json, logical_id, ref, resource, sub, template
from bookstore.cloud.settings import AURORA_ENGINE_VERSION, CloudSettings
from bookstore.ports import TableSchema

# Streams carry both images: the stream consumers (best sellers, search) read the new one, and global
# tables require NEW_AND_OLD_IMAGES.
STREAM_VIEW = "NEW_AND_OLD_IMAGES"
BLOG_SECRET = "BlogCredentials"


def _key_schema(partition: str, sort: str | None) -> list[Json]:
    keys = [{"AttributeName": partition, "KeyType": "HASH"}]
    if sort is not None:
        keys.append({"AttributeName": sort, "KeyType": "RANGE"})
    return keys


def global_table(schema: TableSchema, settings: CloudSettings) -> Json:
    """One table with a replica in every region, as the dynamodb adapter creates it in one."""
    names = {schema.partition_key, *([schema.sort_key] if schema.sort_key else [])}
    for index in schema.indexes:
        names.update(n for n in (index.partition_key, index.sort_key) if n is not None)
    properties: Json = {
        "TableName": settings.table_prefix + schema.name,
        "BillingMode": "PAY_PER_REQUEST",
        "AttributeDefinitions": [
            {"AttributeName": n, "AttributeType": "N" if n in schema.number_keys else "S"}
            for n in sorted(names)
        ],
        "KeySchema": _key_schema(schema.partition_key, schema.sort_key),
        "StreamSpecification": {"StreamViewType": STREAM_VIEW},
        "SSESpecification": {"SSEEnabled": True},
        "Replicas": [
            {"Region": region, "PointInTimeRecoverySpecification": {"PointInTimeRecoveryEnabled": True}}
            for region in settings.regions
        ],
    }
    if schema.indexes:
        properties["GlobalSecondaryIndexes"] = [
            {
                "IndexName": index.name,
                "KeySchema": _key_schema(index.partition_key, index.sort_key),
                "Projection": {"ProjectionType": "ALL"},
            }
            for index in schema.indexes
        ]
    return resource(
        "AWS::DynamoDB::GlobalTable", properties, DeletionPolicy="Retain", UpdateReplacePolicy="Retain"
    )


def table_id(schema: TableSchema) -> str:
    return f"{logical_id(schema.name)}Table"


def global_template(settings: CloudSettings) -> Json:
    resources: Json = {table_id(schema): global_table(schema, settings) for schema in tables.ALL}
    outputs: Json = {f"{table_id(s)}Name": ref(table_id(s)) for s in tables.ALL}
    if settings.blog:
        resources[BLOG_SECRET] = resource(
            "AWS::SecretsManager::Secret",
            {
                "Name": f"{settings.stack_prefix}/blog/admin",
                "Description": "The blog database's admin user (the Aurora global cluster's master user)",
                "GenerateSecretString": {
                    "SecretStringTemplate": '{"username": "bookstore"}',
                    "GenerateStringKey": "password",
                    "PasswordLength": 32,
                    "ExcludeCharacters": "\"@/\\' ",
                },
                # Every region's blog reads the same credentials in its own region.
                "ReplicaRegions": [{"Region": r} for r in settings.others],
            },
        )
        resources["BlogGlobalCluster"] = resource(
            "AWS::RDS::GlobalCluster",
            {
                "GlobalClusterIdentifier": settings.global_cluster,
                "Engine": "aurora-mysql",
                "EngineVersion": AURORA_ENGINE_VERSION,
                "StorageEncrypted": True,
                "DeletionProtection": False,
            },
        )
        outputs["BlogSecretArn"] = ref(BLOG_SECRET)
        outputs["BlogGlobalCluster"] = ref("BlogGlobalCluster")
    outputs["StackRegion"] = sub("${AWS::Region}")
    return template(
        f"Bookstore: global tables in {', '.join(settings.regions)}"
        + (" and the blog's Aurora global database" if settings.blog else ""),
        resources,
        outputs=outputs,
    )


def table_arn(settings: CloudSettings, name: str, suffix: str = "") -> Json:
    """The Bookstore table `name` in the stack's region (with `suffix`: its "/index/*" or "/stream/*")."""
    return sub(
        "arn:${AWS::Partition}:dynamodb:${AWS::Region}:${AWS::AccountId}:"
        f"table/{settings.table_prefix}{name}{suffix}"
    )


def table_arns(settings: CloudSettings, suffix: str = "") -> list[Json]:
    """Every global table of the Bookstore in the stack's region, for IAM policies: no other table."""
    return [table_arn(settings, schema.name, suffix) for schema in tables.ALL]
