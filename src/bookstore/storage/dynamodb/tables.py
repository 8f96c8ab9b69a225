"""DynamoTable: the Table port on a DynamoDB table through boto3, its change stream on DynamoDB Streams."""

from __future__ import annotations

import math
from collections.abc import Iterator, Mapping
from datetime import datetime
from decimal import Decimal
from typing import Any, cast

from boto3.dynamodb.types import TypeDeserializer, TypeSerializer
from botocore.exceptions import BotoCoreError, ClientError

from bookstore.domain.errors import ConditionFailed, StaleCursor, StorageError, ValidationError
from bookstore.ports import (
    AttributeEquals,
    ChangeBatch,
    ChangeRecord,
    Condition,
    Item,
    ItemAbsent,
    ItemExists,
    Key,
    Page,
    SortRange,
    TableSchema,
)
from bookstore.storage.items import (
    check_changes,
    check_item,
    check_limit,
    decode_cursor,
    encode_cursor,
    key_names,
    key_parts,
    natural,
)

# Position of a stream shard read to its end (it was closed by a split); its children follow it.
SHARD_DONE = ""
# A closed shard may answer a few empty reads before the one without a next iterator.
MAX_EMPTY_READS = 5
MAX_RECORDS_PER_READ = 1000


def to_dynamo(value: Any) -> Any:
    """A JSON-like value as TypeSerializer takes it: floats become Decimals written from their repr."""
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(f"{value} is not a finite number")
        return Decimal(str(value))
    if isinstance(value, dict):
        return {k: to_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [to_dynamo(v) for v in value]
    return value


def from_dynamo(value: Any) -> Any:
    """A value from TypeDeserializer as JSON-like Python: integral Decimals to int, others to float."""
    if isinstance(value, Decimal):
        return int(value) if cast(int, value.as_tuple().exponent) >= 0 else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list):
        return [from_dynamo(v) for v in value]
    if isinstance(value, set | frozenset):
        return sorted(from_dynamo(v) for v in value)
    return value


class DynamoTable:
    """A Table on the DynamoDB table `prefix + schema.name`.

    Key attributes are strings unless `key_types` says "N" for one (DynamoDB needs their types when it
    creates the table). Reads of the table itself are strongly consistent; index queries are eventually
    consistent, as DynamoDB's global secondary indexes are.
    """

    def __init__(
        self,
        schema: TableSchema,
        *,
        client: Any,
        streams_client: Any,
        prefix: str = "bookstore-",
        key_types: Mapping[str, str] | None = None,
        region: str | None = None,
    ) -> None:
        self.schema = schema
        self.table_name = prefix + schema.name
        self.region: str = region if region is not None else str(client.meta.region_name)
        self._client = client
        self._streams = streams_client
        self._serializer = TypeSerializer()
        self._deserializer = TypeDeserializer()
        names = {*key_names(schema)}
        for index in schema.indexes:
            names.update(n for n in (index.partition_key, index.sort_key) if n is not None)
        types = {name: "N" for name in schema.number_keys} | dict(key_types or {})
        for name, kind in types.items():
            if kind not in ("S", "N"):
                raise ValidationError(f"key type of {name} must be 'S' or 'N', got {kind!r}")
        self._key_types = {name: types.get(name, "S") for name in sorted(names)}
        self._stream_arn: str | None = None

    # -- table lifecycle -----------------------------------------------------------------------------

    def ensure_table(self) -> None:
        """Create the table (on demand billing, indexes projecting all, stream of both images) if absent."""
        schema = self.schema
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeySchema": _key_schema(schema.partition_key, schema.sort_key),
            "AttributeDefinitions": [
                {"AttributeName": name, "AttributeType": kind} for name, kind in self._key_types.items()
            ],
            "BillingMode": "PAY_PER_REQUEST",
            "StreamSpecification": {"StreamEnabled": True, "StreamViewType": "NEW_AND_OLD_IMAGES"},
        }
        if schema.indexes:
            request["GlobalSecondaryIndexes"] = [
                {
                    "IndexName": index.name,
                    "KeySchema": _key_schema(index.partition_key, index.sort_key),
                    "Projection": {"ProjectionType": "ALL"},
                }
                for index in schema.indexes
            ]
        create_if_absent(self._client, request)

    # -- reads ---------------------------------------------------------------------------------------

    def get(self, key: Key) -> Item | None:
        response = self._call("get_item", TableName=self.table_name, Key=self._key(key), ConsistentRead=True)
        raw = response.get("Item")
        return None if raw is None else self._item(raw)

    def query(
        self,
        partition: Any,
        *,
        index: str | None = None,
        sort_range: SortRange | None = None,
        descending: bool = False,
        limit: int = 100,
        cursor: str | None = None,
    ) -> Page:
        check_limit(limit)
        schema = self.schema
        idx = None if index is None else schema.index(index)
        pk_name = schema.partition_key if idx is None else idx.partition_key
        sk_name = schema.sort_key if idx is None else idx.sort_key
        low = None if sort_range is None else sort_range.low
        high = None if sort_range is None else sort_range.high
        if sk_name is None and (low, high) != (None, None):
            raise ValidationError(
                f"table {schema.name}: {index or 'the table'} has no sort key to range over"
            )
        names = {"#p": pk_name}
        values = {":p": self._key_attribute(pk_name, partition)}
        condition = "#p = :p"
        if sk_name is not None and (low is not None or high is not None):
            names["#s"] = sk_name
            if low is not None and high is not None:
                if natural(low) > natural(high):
                    return Page(items=[])
                condition += " AND #s BETWEEN :lo AND :hi"
                values[":lo"] = self._key_attribute(sk_name, low)
                values[":hi"] = self._key_attribute(sk_name, high)
            elif low is not None:
                condition += " AND #s >= :lo"
                values[":lo"] = self._key_attribute(sk_name, low)
            else:
                condition += " AND #s <= :hi"
                values[":hi"] = self._key_attribute(sk_name, high)
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "KeyConditionExpression": condition,
            "ExpressionAttributeNames": names,
            "ExpressionAttributeValues": values,
            "ScanIndexForward": not descending,
            "Limit": limit + 1,
        }
        start_names = key_names(schema)
        if idx is None:
            request["ConsistentRead"] = True
        else:
            request["IndexName"] = idx.name
            start_names += [
                n for n in (idx.partition_key, idx.sort_key) if n is not None and n not in start_names
            ]
        if cursor is not None:
            request["ExclusiveStartKey"] = self._start_key(cursor, start_names)
        return self._page(self._call("query", **request), limit, start_names)

    def scan(self, *, limit: int = 100, cursor: str | None = None) -> Page:
        check_limit(limit)
        start_names = key_names(self.schema)
        request: dict[str, Any] = {"TableName": self.table_name, "Limit": limit + 1, "ConsistentRead": True}
        if cursor is not None:
            request["ExclusiveStartKey"] = self._start_key(cursor, start_names)
        return self._page(self._call("scan", **request), limit, start_names)

    def _page(self, response: Mapping[str, Any], limit: int, start_names: list[str]) -> Page:
        items = [self._item(raw) for raw in response.get("Items", [])]
        # One item more than asked tells whether another page exists, so the last page has no cursor.
        if len(items) > limit:
            last = items[limit - 1]
            return Page(items=items[:limit], cursor=encode_cursor({n: last[n] for n in start_names}))
        last_key = response.get("LastEvaluatedKey")
        if last_key:
            return Page(items=items, cursor=encode_cursor(self._item(last_key)))
        return Page(items=items)

    def _start_key(self, cursor: str, names: list[str]) -> dict[str, Any]:
        position = decode_cursor(cursor)
        if not isinstance(position, dict) or sorted(position) != sorted(names):
            raise ValidationError(f"malformed page cursor {cursor!r}")
        return {name: self._key_attribute(name, value) for name, value in position.items()}

    # -- writes --------------------------------------------------------------------------------------

    def put(self, item: Item, *, condition: Condition | None = None) -> None:
        check_item(self.schema, item)
        for name, kind in self._key_types.items():
            if name in item:
                self._check_type(name, item[name], kind)
        request: dict[str, Any] = {"TableName": self.table_name, "Item": self._attributes(item)}
        self._with_condition(request, condition, {}, {})
        self._call("put_item", **request)

    def update(self, key: Key, changes: Mapping[str, Any], *, condition: Condition | None = None) -> Item:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._key(key),
            "ReturnValues": "ALL_NEW",
        }
        check_changes(self.schema, changes)
        names: dict[str, str] = {}
        values: dict[str, Any] = {}
        sets: list[str] = []
        removes: list[str] = []
        for i, (name, value) in enumerate(changes.items()):
            names[f"#a{i}"] = name
            if value is None:
                removes.append(f"#a{i}")
                continue
            if name in self._key_types:
                self._check_type(name, value, self._key_types[name])
            values[f":v{i}"] = self._value(value)
            sets.append(f"#a{i} = :v{i}")
        expression = []
        if sets:
            expression.append("SET " + ", ".join(sets))
        if removes:
            expression.append("REMOVE " + ", ".join(removes))
        if expression:
            request["UpdateExpression"] = " ".join(expression)
        self._with_condition(request, condition, names, values)
        return self._item(self._call("update_item", **request)["Attributes"])

    def delete(self, key: Key, *, condition: Condition | None = None) -> Item | None:
        request: dict[str, Any] = {
            "TableName": self.table_name,
            "Key": self._key(key),
            "ReturnValues": "ALL_OLD",
        }
        self._with_condition(request, condition, {}, {})
        raw = self._call("delete_item", **request).get("Attributes")
        return None if raw is None else self._item(raw)

    def _with_condition(
        self,
        request: dict[str, Any],
        condition: Condition | None,
        names: dict[str, str],
        values: dict[str, Any],
    ) -> None:
        """Add `condition` as a ConditionExpression, and the expression names and values, to `request`."""
        if isinstance(condition, ItemAbsent | ItemExists):
            names["#cond"] = self.schema.partition_key
            function = "attribute_not_exists" if isinstance(condition, ItemAbsent) else "attribute_exists"
            request["ConditionExpression"] = f"{function}(#cond)"
        elif isinstance(condition, AttributeEquals):
            names["#cond"] = condition.name
            values[":cond"] = self._value(condition.value)
            request["ConditionExpression"] = "#cond = :cond"
        elif condition is not None:
            raise ValidationError(f"unknown condition {condition!r}")
        if names:
            request["ExpressionAttributeNames"] = names
        if values:
            request["ExpressionAttributeValues"] = values

    # -- change stream -------------------------------------------------------------------------------

    def changes(self, cursor: str | None = None, *, limit: int = 100) -> ChangeBatch:
        """Records from DynamoDB Streams; the cursor holds the last sequence number read in each shard.

        A parent shard is read to its end before its children, which keeps the order of every key's
        changes; across keys in different shards DynamoDB gives no order.
        """
        check_limit(limit)
        positions: dict[str, str] = {}
        if cursor is not None:
            decoded = decode_cursor(cursor)
            if not isinstance(decoded, dict) or not all(isinstance(v, str) for v in decoded.values()):
                raise ValidationError(f"malformed change cursor {cursor!r}")
            positions = decoded
        arn = self._stream()
        shards = list(self._shards(arn))
        known = {shard["ShardId"] for shard in shards}
        # A shard read to its end may age out of the stream harmlessly; one read only part-way took
        # records this cursor never saw with it (DynamoDB Streams keeps 24 h): the reader must rebuild.
        lost = [
            shard_id for shard_id, seq in positions.items() if shard_id not in known and seq != SHARD_DONE
        ]
        if lost:
            raise StaleCursor(f"stream of {self.table_name}: shards {lost} were trimmed before being read")
        positions = {shard_id: seq for shard_id, seq in positions.items() if shard_id in known}
        records: list[ChangeRecord] = []
        for shard in shards:
            if len(records) >= limit:
                break
            shard_id = shard["ShardId"]
            parent: str = shard.get("ParentShardId", "")
            if positions.get(shard_id) == SHARD_DONE or (
                parent in known and positions.get(parent) != SHARD_DONE
            ):
                continue
            closed = "EndingSequenceNumber" in shard.get("SequenceNumberRange", {})
            self._read_shard(arn, shard_id, closed, positions, records, limit)
        return ChangeBatch(records=records, cursor=encode_cursor(positions))

    def stream_head(self) -> str:
        """DynamoDB Streams names no newest position without reading to it: this reads the stream through."""
        batch = self.changes(None, limit=MAX_RECORDS_PER_READ)
        while len(batch.records) == MAX_RECORDS_PER_READ:
            batch = self.changes(batch.cursor, limit=MAX_RECORDS_PER_READ)
        return batch.cursor

    def _read_shard(
        self,
        arn: str,
        shard_id: str,
        closed: bool,
        positions: dict[str, str],
        records: list[ChangeRecord],
        limit: int,
    ) -> None:
        request: dict[str, Any] = {"StreamArn": arn, "ShardId": shard_id}
        if shard_id in positions:
            request.update(ShardIteratorType="AFTER_SEQUENCE_NUMBER", SequenceNumber=positions[shard_id])
        else:
            request["ShardIteratorType"] = "TRIM_HORIZON"
        iterator: str | None = self._streams_call("get_shard_iterator", **request).get("ShardIterator")
        empty_reads = 0
        while iterator is not None and len(records) < limit:
            response = self._streams_call(
                "get_records", ShardIterator=iterator, Limit=min(MAX_RECORDS_PER_READ, limit - len(records))
            )
            raw_records = response.get("Records", [])
            for raw in raw_records:
                records.append(self.change_record(raw))
                positions[shard_id] = raw["dynamodb"]["SequenceNumber"]
            iterator = response.get("NextShardIterator")
            if iterator is None:
                positions[shard_id] = SHARD_DONE
            elif not raw_records:
                empty_reads += 1
                # An open shard with nothing new is caught up; a closed one ends with a null iterator.
                if not closed or empty_reads >= MAX_EMPTY_READS:
                    return
            else:
                empty_reads = 0

    def change_record(self, raw: Mapping[str, Any]) -> ChangeRecord:
        """A record of the table's stream as boto3 reads it, or as a Lambda event carries it (its time in
        epoch seconds, a number, where boto3 gives a datetime)."""
        data = raw["dynamodb"]
        created = data.get("ApproximateCreationDateTime")
        written_ms = (
            int(created.timestamp() * 1000)
            if isinstance(created, datetime)
            else int(float(created or 0) * 1000)
        )
        return ChangeRecord(
            kind=raw["eventName"],
            key=self._item(data["Keys"]),
            old=self._item(data["OldImage"]) if "OldImage" in data else None,
            new=self._item(data["NewImage"]) if "NewImage" in data else None,
            written_ms=written_ms,
            origin=self.region,
        )

    def _stream(self) -> str:
        if self._stream_arn is None:
            table = self._call("describe_table", TableName=self.table_name)["Table"]
            arn = table.get("LatestStreamArn")
            if not arn or not table.get("StreamSpecification", {}).get("StreamEnabled", False):
                raise StorageError(f"table {self.table_name} has no stream enabled")
            self._stream_arn = str(arn)
        return self._stream_arn

    def _shards(self, arn: str) -> Iterator[dict[str, Any]]:
        """Every shard of the stream, each parent before its children, then by starting sequence number."""
        shards: list[dict[str, Any]] = []
        request: dict[str, Any] = {"StreamArn": arn}
        while True:
            description = self._streams_call("describe_stream", **request)["StreamDescription"]
            shards.extend(description.get("Shards", []))
            last = description.get("LastEvaluatedShardId")
            if not last:
                break
            request["ExclusiveStartShardId"] = last
        by_id = {shard["ShardId"]: shard for shard in shards}
        emitted: set[str] = set()

        def lineage(shard: dict[str, Any]) -> Iterator[dict[str, Any]]:
            parent = by_id.get(shard.get("ParentShardId", ""))
            if parent is not None and parent["ShardId"] not in emitted:
                yield from lineage(parent)
            emitted.add(shard["ShardId"])
            yield shard

        def start(shard: dict[str, Any]) -> int:
            return int(shard.get("SequenceNumberRange", {}).get("StartingSequenceNumber", "0"))

        for shard in sorted(shards, key=start):
            if shard["ShardId"] not in emitted:
                yield from lineage(shard)

    # -- conversions and calls -----------------------------------------------------------------------

    def _key(self, key: Key) -> dict[str, Any]:
        key_parts(self.schema, key)
        return {name: self._key_attribute(name, value) for name, value in key.items()}

    def _key_attribute(self, name: str, value: Any) -> dict[str, Any]:
        self._check_type(name, value, self._key_types.get(name, "S"))
        return self._value(value)

    def _check_type(self, name: str, value: Any, kind: str) -> None:
        ok = (
            isinstance(value, str)
            if kind == "S"
            else isinstance(value, int | float) and type(value) is not bool
        )
        if not ok or value == "":
            expected = "a non-empty string" if kind == "S" else "a number"
            raise ValidationError(
                f"table {self.schema.name}: key attribute {name} must be {expected}, got {value!r}"
            )

    def _value(self, value: Any) -> dict[str, Any]:
        return cast(dict[str, Any], self._serializer.serialize(to_dynamo(value)))

    def _attributes(self, item: Mapping[str, Any]) -> dict[str, Any]:
        return {name: self._value(value) for name, value in item.items()}

    def _item(self, raw: Mapping[str, Any]) -> Item:
        return {name: from_dynamo(self._deserializer.deserialize(value)) for name, value in raw.items()}

    def _call(self, operation: str, **request: Any) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], getattr(self._client, operation)(**request))
        except ClientError as exc:
            code = error_code(exc)
            if code == "ConditionalCheckFailedException":
                raise ConditionFailed(f"table {self.schema.name}: condition does not hold") from exc
            if code == "ValidationException":
                raise ValidationError(f"table {self.schema.name}: {error_message(exc)}") from exc
            raise StorageError(
                f"table {self.table_name}: {operation} failed: {code}: {error_message(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"table {self.table_name}: {operation} failed: {exc}") from exc

    def _streams_call(self, operation: str, **request: Any) -> dict[str, Any]:
        try:
            return cast(dict[str, Any], getattr(self._streams, operation)(**request))
        except ClientError as exc:
            # A position older than the stream's retention: what came after it is gone.
            error = StaleCursor if error_code(exc) == "TrimmedDataAccessException" else StorageError
            raise error(
                f"stream of {self.table_name}: {operation} failed: {error_code(exc)}: {error_message(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise StorageError(f"stream of {self.table_name}: {operation} failed: {exc}") from exc


def create_if_absent(client: Any, request: dict[str, Any]) -> None:
    """Create the table `request` describes (CreateTable's arguments) unless it exists; wait until active."""
    name = request["TableName"]
    try:
        client.describe_table(TableName=name)
        return
    except ClientError as exc:
        if error_code(exc) != "ResourceNotFoundException":
            raise StorageError(f"cannot describe table {name}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot describe table {name}: {exc}") from exc
    try:
        client.create_table(**request)
    except ClientError as exc:
        # Another process created it meanwhile: fine, wait for it like for ours.
        if error_code(exc) != "ResourceInUseException":
            raise StorageError(f"cannot create table {name}: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"cannot create table {name}: {exc}") from exc
    try:
        client.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 1, "MaxAttempts": 120})
    except (ClientError, BotoCoreError) as exc:
        raise StorageError(f"table {name} did not become active: {exc}") from exc


def _key_schema(partition_key: str, sort_key: str | None) -> list[dict[str, str]]:
    schema = [{"AttributeName": partition_key, "KeyType": "HASH"}]
    if sort_key is not None:
        schema.append({"AttributeName": sort_key, "KeyType": "RANGE"})
    return schema


def error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


def error_message(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Message", exc))
