"""DynamoDB Global Tables (version 2019.11.21): making a table global with boto3 and describing its replicas.

On the dynamodb backend DynamoDB replicates natively (last writer wins, like ours), so our replicator
stays off; this module only asks DynamoDB for replicas. Rules of the service it follows: the table's
stream must carry NEW_AND_OLD_IMAGES; one UpdateTable may create only ONE replica, and the table must be
ACTIVE again before the next; a replica cannot be created where a table of that name already exists.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from bookstore.domain.errors import StorageError, ValidationError

STREAM_VIEW = "NEW_AND_OLD_IMAGES"
ACTIVE = "ACTIVE"
# Replica states from which waiting longer cannot bring the replica to ACTIVE.
FAILED_STATES = frozenset(
    {"CREATION_FAILED", "DELETING", "REGION_DISABLED", "INACCESSIBLE_ENCRYPTION_CREDENTIALS", "ARCHIVED"}
)
# Creating a replica takes minutes for an empty table and may take hours for a large one.
DEFAULT_TIMEOUT_S = 3600.0
DEFAULT_POLL_S = 5.0
# While a wait lasts, a status that does not change is reported again this often.
REPORT_EVERY_S = 30.0
_REGION = re.compile(r"^[a-z]{2}(-[a-z]+)+-\d+$")


def describe_global(client: Any, table_name: str) -> list[dict[str, str]]:
    """Every region of the table: its own region first (the table's status), then each replica's.

    Each entry is {"region", "status"} plus "detail" when DynamoDB gives a status description.
    StorageError (with DynamoDB's message) when the table does not exist or cannot be described.
    """
    return _regions(_describe(client, table_name), _own_region(client))


def make_global(
    client: Any,
    table_name: str,
    regions: list[str],
    *,
    client_for: Callable[[str], Any] | None = None,
    timeout_s: float = DEFAULT_TIMEOUT_S,
    poll_s: float = DEFAULT_POLL_S,
    progress: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Make `table_name` (in `client`'s region) a global table with a replica in every one of `regions`.

    Idempotent: the table's own region and regions that already hold a replica are skipped (a replica
    still being created is waited for). Enables the stream (NEW_AND_OLD_IMAGES) first when the table has
    none; a stream of another view type is refused, as changing it would cut its current readers off.
    `client_for(region)`, when given, is used to check that no other table of that name stands in the
    way in a region about to get a replica. Waits until the table and every replica are ACTIVE.

    Returns {"table", "region", "streamEnabled", "created", "skipped", "replicas"} where `replicas` is
    what describe_global answers at the end. StorageError carries DynamoDB's own message. `progress`
    is told each step and, while a wait lasts, each change of status (and every half minute).
    """
    say = progress or (lambda _line: None)
    own = _own_region(client)
    wanted = _checked_regions(regions)
    table = _describe(client, table_name)
    stream_enabled = _ensure_stream(client, table_name, table, timeout_s, poll_s)
    if stream_enabled:
        say(f"{table_name}: stream enabled (NEW_AND_OLD_IMAGES)")
        table = _wait(client, table_name, None, timeout_s, poll_s, say)
    present = {r["RegionName"] for r in table.get("Replicas", []) if "RegionName" in r}
    created: list[str] = []
    skipped: list[str] = []
    for region in wanted:
        if region == own:
            continue
        if region in present:
            skipped.append(region)
            say(f"{table_name}: a replica in {region} is there already; waiting until it is ACTIVE")
            table = _wait(client, table_name, region, timeout_s, poll_s, say)
            continue
        if client_for is not None:
            _check_free(client_for(region), table_name, region, own)
        table = _wait(client, table_name, None, timeout_s, poll_s, say)
        say(f"{table_name}: adding a replica in {region} (minutes to an hour on AWS)")
        response = _call(
            client,
            "update_table",
            f"adding a replica of {table_name} in {region}",
            TableName=table_name,
            ReplicaUpdates=[{"Create": {"RegionName": region}}],
        )
        _check_accepted(client, table_name, region, response.get("TableDescription", {}))
        table = _wait(client, table_name, region, timeout_s, poll_s, say)
        say(f"{table_name}: the replica in {region} is ACTIVE")
        created.append(region)
    return {
        "table": table_name,
        "region": own,
        "streamEnabled": stream_enabled,
        "created": created,
        "skipped": skipped,
        "replicas": _regions(table, own),
    }


def _own_region(client: Any) -> str:
    return str(client.meta.region_name)


def _checked_regions(regions: list[str]) -> list[str]:
    cleaned = [r.strip() for r in regions if r.strip()]
    if not cleaned:
        raise ValidationError("name at least one region for the global table, e.g. eu-west-1,ap-southeast-1")
    for region in cleaned:
        if not _REGION.match(region):
            raise ValidationError(f"{region!r} is not an AWS region name (like eu-west-1)")
    return list(dict.fromkeys(cleaned))


def _call(client: Any, operation: str, what: str, **request: Any) -> Any:
    try:
        return getattr(client, operation)(**request)
    except ClientError as exc:
        error = exc.response.get("Error", {})
        code = error.get("Code", "ClientError")
        message = error.get("Message", str(exc))
        raise StorageError(f"{what} failed: {code}: {message}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"{what} failed: {exc}") from exc


def _describe(client: Any, table_name: str) -> Mapping[str, Any]:
    what = f"describing table {table_name} in {_own_region(client)}"
    table: Mapping[str, Any] = _call(client, "describe_table", what, TableName=table_name)["Table"]
    return table


def _regions(table: Mapping[str, Any], own: str) -> list[dict[str, str]]:
    out = [{"region": own, "status": str(table.get("TableStatus", "UNKNOWN"))}]
    # Whether DescribeTable lists the region asked in its Replicas too, it is reported once, first.
    for replica in table.get("Replicas", []):
        region = replica.get("RegionName")
        if not region or region == own:
            continue
        entry = {"region": str(region), "status": str(replica.get("ReplicaStatus", "UNKNOWN"))}
        if replica.get("ReplicaStatusDescription"):
            entry["detail"] = str(replica["ReplicaStatusDescription"])
        out.append(entry)
    return out


def _ensure_stream(
    client: Any, table_name: str, table: Mapping[str, Any], timeout_s: float, poll_s: float
) -> bool:
    """Enable the stream global tables need; True when it had to be enabled."""
    spec = table.get("StreamSpecification") or {}
    if spec.get("StreamEnabled"):
        view = spec.get("StreamViewType")
        if view != STREAM_VIEW:
            raise StorageError(
                f"table {table_name} streams {view}, but global tables need {STREAM_VIEW}; changing the "
                "view type means disabling the stream, which cuts its readers off: do it by hand if you must"
            )
        return False
    _wait(client, table_name, None, timeout_s, poll_s)
    _call(
        client,
        "update_table",
        f"enabling the stream of {table_name}",
        TableName=table_name,
        StreamSpecification={"StreamEnabled": True, "StreamViewType": STREAM_VIEW},
    )
    return True


def _check_free(regional: Any, table_name: str, region: str, own: str) -> None:
    """DynamoDB creates a replica only where no table of that name exists; say so before asking."""
    try:
        regional.describe_table(TableName=table_name)
    except ClientError as exc:
        if exc.response.get("Error", {}).get("Code") == "ResourceNotFoundException":
            return
        raise StorageError(f"describing {table_name} in {region} failed: {exc}") from exc
    except BotoCoreError as exc:
        raise StorageError(f"describing {table_name} in {region} failed: {exc}") from exc
    raise StorageError(
        f"a table {table_name} already exists in {region} and is not a replica of the one in {own}: "
        f"DynamoDB creates a replica only where no table of that name exists. Make the table global "
        f"before starting {region} on the dynamodb backend, or delete that (empty) table first"
    )


def _check_accepted(client: Any, table_name: str, region: str, description: Mapping[str, Any]) -> None:
    """DynamoDB answers UpdateTable with the new replica listed (CREATING); an endpoint that drops the
    request silently would otherwise leave us waiting for a replica that never comes."""
    if any(r.get("RegionName") == region for r in description.get("Replicas", [])):
        return
    if any(r.get("RegionName") == region for r in _describe(client, table_name).get("Replicas", [])):
        return
    endpoint = getattr(client.meta, "endpoint_url", "the endpoint")
    raise StorageError(
        f"{endpoint} accepted UpdateTable ReplicaUpdates for {table_name} but lists no replica in "
        f"{region}: it does not implement DynamoDB global tables (version 2019.11.21)"
    )


def _wait(
    client: Any,
    table_name: str,
    region: str | None,
    timeout_s: float,
    poll_s: float,
    progress: Callable[[str], None] | None = None,
) -> Mapping[str, Any]:
    """Describe the table until it (and the replica in `region`, when given) is ACTIVE; tells `progress`
    each status seen while waiting, and again every REPORT_EVERY_S."""
    started = time.monotonic()
    deadline = started + timeout_s
    reported: tuple[Any, float] | None = None
    while True:
        table = _describe(client, table_name)
        replica = None
        if region is not None:
            replica = next((r for r in table.get("Replicas", []) if r.get("RegionName") == region), None)
            if replica is None:
                raise StorageError(f"table {table_name} has no replica in {region} to wait for")
            status = replica.get("ReplicaStatus")
            if status in FAILED_STATES:
                detail = replica.get("ReplicaStatusDescription") or "no description"
                raise StorageError(f"the replica of {table_name} in {region} is {status}: {detail}")
        table_ready = table.get("TableStatus") == ACTIVE
        if table_ready and (replica is None or replica.get("ReplicaStatus") == ACTIVE):
            return table
        state = table.get("TableStatus") if replica is None else replica.get("ReplicaStatus")
        where = table_name if region is None else f"the replica of {table_name} in {region}"
        now = time.monotonic()
        if progress is not None and (
            reported is None or reported[0] != state or now - reported[1] >= REPORT_EVERY_S
        ):
            progress(f"{where} is {state} ({now - started:.0f} s)")
            reported = (state, now)
        if now >= deadline:
            raise StorageError(f"{where} is still {state} after {timeout_s:.0f} s; it goes on in AWS")
        time.sleep(poll_s)
