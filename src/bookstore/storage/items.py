"""Item rules every Table adapter shares: key and value checks, conditions, updates, page cursors."""

from __future__ import annotations

import base64
import binascii
import math
from collections.abc import Mapping
from typing import Any

import orjson

from bookstore.domain.errors import ValidationError
from bookstore.ports import AttributeEquals, Condition, Item, ItemAbsent, ItemExists, Key, TableSchema

KeyValue = str | int | float

# orjson refuses integers outside these bounds; DynamoDB keeps 38 digits, so these are the portable ones.
_INT_MIN = -(2**63)
_INT_MAX = 2**64 - 1
_SEQUENCES = (list, tuple)


def is_key_value(value: Any) -> bool:
    """Whether `value` may be a key (or index key): a non-empty string or a finite number."""
    kind = type(value)
    if kind is str:
        return bool(value)
    if kind is int:
        return True
    return kind is float and math.isfinite(value)


def natural(value: Any) -> tuple[int, Any]:
    """Sort order of key values: numbers by value, then strings by code point (as SQLite orders them)."""
    if value is None:
        return (-1, 0)
    if type(value) is str:
        return (1, value)
    return (0, value)


def key_value(table: str, name: str, value: Any) -> KeyValue:
    if not is_key_value(value):
        raise ValidationError(
            f"table {table}: key attribute {name} must be a non-empty string or a number, got {value!r}"
        )
    return value  # type: ignore[no-any-return]


def key_parts(schema: TableSchema, key: Mapping[str, Any]) -> tuple[KeyValue, KeyValue | None]:
    """The partition and sort values of `key`, which must hold exactly the key attributes."""
    expected = 1 if schema.sort_key is None else 2
    if len(key) != expected or schema.partition_key not in key:
        raise ValidationError(
            f"table {schema.name}: a key holds exactly {key_names(schema)}, got {sorted(key)}"
        )
    pk = key_value(schema.name, schema.partition_key, key[schema.partition_key])
    if schema.sort_key is None:
        return pk, None
    if schema.sort_key not in key:
        raise ValidationError(
            f"table {schema.name}: a key holds exactly {key_names(schema)}, got {sorted(key)}"
        )
    return pk, key_value(schema.name, schema.sort_key, key[schema.sort_key])


def key_names(schema: TableSchema) -> list[str]:
    return [schema.partition_key] if schema.sort_key is None else [schema.partition_key, schema.sort_key]


def check_value(value: Any, path: str = "item") -> None:
    """Raise ValidationError unless `value` is JSON-like: str, finite number, bool, None, list, map by str."""
    # Every write checks its item: the walk that names where a value is wrong (a path string made per
    # value) runs only once the plain walk found one.
    if not _plain(value):
        _check_value(value, path)


def _plain(value: Any) -> bool:
    """Whether check_value accepts `value`, without saying where it does not."""
    kind: type = type(value)
    if kind is str or kind is bool or value is None:
        return True
    if kind is int:
        number: int = value
        return _INT_MIN <= number <= _INT_MAX
    if kind is float:
        return math.isfinite(value)
    if isinstance(value, dict):
        for k, v in value.items():  # noqa: SIM110 (a loop: all() over a generator costs a third more)
            if type(k) is not str or not _plain(v):
                return False
        return True
    if isinstance(value, _SEQUENCES):
        for v in value:  # noqa: SIM110
            if not _plain(v):
                return False
        return True
    return False


def _check_value(value: Any, path: str) -> None:
    kind = type(value)
    if kind is str or kind is bool or value is None:
        return
    if kind is int:
        if not _INT_MIN <= value <= _INT_MAX:
            raise ValidationError(f"{path}: integer {value} is out of range")
        return
    if kind is float:
        if not math.isfinite(value):
            raise ValidationError(f"{path}: {value} is not a finite number")
        return
    if isinstance(value, dict):
        for k, v in value.items():
            if type(k) is not str:
                raise ValidationError(f"{path}: map keys must be strings, got {k!r}")
            _check_value(v, f"{path}.{k}")
        return
    if isinstance(value, list | tuple):
        for i, v in enumerate(value):
            _check_value(v, f"{path}[{i}]")
        return
    raise ValidationError(f"{path}: unsupported value {value!r} of type {kind.__name__}")


def check_item(schema: TableSchema, item: Mapping[str, Any]) -> Key:
    """Validate a whole item for `put`; returns its key."""
    if not isinstance(item, dict):
        raise ValidationError(f"table {schema.name}: an item is a mapping, got {type(item).__name__}")
    key = schema.key_of(item)
    for name, value in key.items():
        key_value(schema.name, name, value)
    for index in schema.indexes:
        for attribute in (index.partition_key, index.sort_key):
            if attribute is not None and attribute in item and not is_key_value(item[attribute]):
                raise ValidationError(
                    f"table {schema.name}: attribute {attribute} is a key of index {index.name} "
                    f"and must be a non-empty string or a number, got {item[attribute]!r}"
                )
    check_value(item)
    return key


def same(a: Any, b: Any) -> bool:
    """Equality as DynamoDB sees it: numbers by value, but a boolean never equals a number."""
    if type(a) is bool or type(b) is bool:
        return type(a) is type(b) and a == b
    return bool(a == b)


def holds(condition: Condition | None, stored: Item | None) -> bool:
    """Whether `condition` holds for the stored item (None when absent)."""
    if condition is None:
        return True
    if isinstance(condition, ItemAbsent):
        return stored is None
    if isinstance(condition, ItemExists):
        return stored is not None
    if isinstance(condition, AttributeEquals):
        return (
            stored is not None and condition.name in stored and same(stored[condition.name], condition.value)
        )
    raise ValidationError(f"unknown condition {condition!r}")


def check_changes(schema: TableSchema, changes: Mapping[str, Any]) -> None:
    """Validate the changes of an `update`: no key attribute, JSON-like values."""
    for name, value in changes.items():
        if type(name) is not str:
            raise ValidationError(f"table {schema.name}: attribute names are strings, got {name!r}")
        if name in (schema.partition_key, schema.sort_key):
            raise ValidationError(f"table {schema.name}: key attribute {name} cannot be updated")
        check_value(value, name)


def merged(schema: TableSchema, key: Key, current: Item | None, changes: Mapping[str, Any]) -> Item:
    """The item `update` leaves: `current` (or just the key) with `changes` set, None removing one."""
    item: Item = dict(current) if current is not None else dict(key)
    for name, value in changes.items():
        if value is None:
            item.pop(name, None)
        else:
            item[name] = value
    check_item(schema, item)
    return item


def encode_cursor(position: Any) -> str:
    """An opaque page cursor holding `position` (JSON-like)."""
    return base64.urlsafe_b64encode(orjson.dumps(position)).decode("ascii")


def decode_cursor(cursor: str) -> Any:
    try:
        return orjson.loads(base64.urlsafe_b64decode(cursor.encode("ascii")))
    except (ValueError, binascii.Error, orjson.JSONDecodeError) as exc:
        raise ValidationError(f"malformed page cursor {cursor!r}") from exc


def check_limit(limit: int) -> None:
    if type(limit) is not int or limit < 1:
        raise ValidationError(f"limit must be a positive integer, got {limit!r}")
