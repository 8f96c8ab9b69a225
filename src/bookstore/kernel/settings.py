"""Layered settings over a pydantic model: defaults, a file, then environment variables, with their sources.

Unknown keys, in the file or in a variable, are refused with the closest valid one: a typo must not
leave a deployment silently on a default. A variable `PREFIX<FIELD>` or `PREFIX<SECTION>__<KEY>`
(nested as deep as the model, case-insensitive) overrides the value at that path; variables with the
prefix that name no field and have no `__` are left alone (they are other settings, such as a data
directory). Values are taken as the field's type accepts them: as text, else as JSON, else as a
comma-separated list.
"""

from __future__ import annotations

import contextlib
import difflib
import json
import types
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Union, get_args, get_origin

from pydantic import BaseModel, TypeAdapter, ValidationError

DEFAULT = "default"
FILE = "file"
ENV = "env"


class SettingsError(ValueError):
    """Settings that cannot be used; `problems` says each thing wrong, naming the key."""

    def __init__(self, problems: list[str], source: str | None = None) -> None:
        self.problems = problems
        super().__init__(f"{source}: " * bool(source) + "; ".join(problems))


@dataclass
class Overrides:
    """What the environment sets: nested values, and the variable behind each dotted path."""

    values: dict[str, Any] = field(default_factory=dict)
    variables: dict[str, str] = field(default_factory=dict)


def _model_of(annotation: Any) -> type[BaseModel] | None:
    """The model a field holds (itself, optional, or a tuple/list of it), or None for a plain value."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    origin = get_origin(annotation)
    if origin in (Union, types.UnionType, tuple, list):
        for arg in get_args(annotation):
            if arg is not type(None) and arg is not Ellipsis and (model := _model_of(arg)) is not None:
                return model
    return None


def _is_sequence(annotation: Any) -> bool:
    origin = get_origin(annotation)
    if origin in (tuple, list):
        return True
    return origin in (Union, types.UnionType) and any(_is_sequence(a) for a in get_args(annotation))


def _unknown(key: str, known: list[str], where: str) -> str:
    close = difflib.get_close_matches(key, known, n=1)
    hint = f"; did you mean {close[0]!r}?" if close else f"; valid keys: {', '.join(known)}"
    return f"unknown key {where}{key!r}{hint}"


def unknown_keys(model: type[BaseModel], data: Mapping[str, Any], where: str = "") -> list[str]:
    """Every key of `data` (recursively) that `model` does not have, with the closest valid one."""
    problems: list[str] = []
    known = list(model.model_fields)
    for key, value in data.items():
        if key not in model.model_fields:
            problems.append(_unknown(key, known, f"[{where}] " if where else ""))
            continue
        nested = _model_of(model.model_fields[key].annotation)
        path = f"{where}.{key}" if where else key
        if nested is None:
            continue
        if isinstance(value, Mapping):
            problems += unknown_keys(nested, value, path)
        elif isinstance(value, list | tuple):
            for index, item in enumerate(value):
                if isinstance(item, Mapping):
                    problems += unknown_keys(nested, item, f"{path}[{index}]")
    return problems


def _parse(annotation: Any, raw: str) -> Any:
    """The variable's text as the field takes it: as text, else as JSON, else as a comma-separated list."""
    adapter: TypeAdapter[Any] = TypeAdapter(annotation)
    candidates: list[Any] = [raw]
    with contextlib.suppress(ValueError):
        candidates.append(json.loads(raw))
    if _is_sequence(annotation):
        candidates.append([part.strip() for part in raw.split(",")])
    for candidate in candidates:
        try:
            adapter.validate_python(candidate)
        except ValidationError:
            continue
        return candidate
    return raw  # the model's validation reports what is wrong with it


def env_overrides(model: type[BaseModel], environ: Mapping[str, str], prefix: str) -> Overrides:
    """The values the environment's `prefix` variables set on `model`; SettingsError for unknown keys."""
    found = Overrides()
    problems: list[str] = []
    for variable in sorted(environ):
        if not variable.upper().startswith(prefix):
            continue
        parts = variable[len(prefix) :].lower().split("__")
        if len(parts) == 1 and parts[0] not in model.model_fields:
            continue  # another setting of ours (a data directory, a credential), not a topology key
        current: type[BaseModel] = model
        target = found.values
        for depth, part in enumerate(parts):
            if part not in current.model_fields:
                where = "the topology" if depth == 0 else f"[{'.'.join(parts[:depth])}]"
                problems.append(f"{variable}: " + _unknown(part, list(current.model_fields), f"{where} "))
                break
            annotation = current.model_fields[part].annotation
            if depth == len(parts) - 1:
                target[part] = _parse(annotation, environ[variable])
                found.variables[".".join(parts)] = variable
                break
            nested = _model_of(annotation)
            if nested is None or _is_sequence(annotation):
                problems.append(f"{variable}: {'.'.join(parts[: depth + 1])} has no keys to set one by one")
                break
            current = nested
            target = target.setdefault(part, {})
    if problems:
        raise SettingsError(problems)
    return found


def merged(base: Mapping[str, Any], override: Mapping[str, Any]) -> dict[str, Any]:
    """`base` with `override` laid over it, tables merged key by key."""
    result = dict(base)
    for key, value in override.items():
        if isinstance(value, Mapping) and isinstance(result.get(key), Mapping):
            result[key] = merged(result[key], value)
        else:
            result[key] = value
    return result


def sources(
    settings: BaseModel, from_file: Mapping[str, Any], variables: Mapping[str, str], where: str = ""
) -> dict[str, str]:
    """Each leaf value's dotted path and where it came from: `default`, `file` or `env:VARIABLE`."""
    result: dict[str, str] = {}
    for name in type(settings).model_fields:
        path = f"{where}.{name}" if where else name
        value = getattr(settings, name)
        if path in variables:
            origin = f"{ENV}:{variables[path]}"
        elif name in from_file:
            origin = FILE
        else:
            origin = ""
        if isinstance(value, tuple | list) and value and all(isinstance(v, BaseModel) for v in value):
            # A list of tables (the regions): each item's keys, all from where the list came from.
            for index, item in enumerate(value):
                inner = sources(item, {}, {}, f"{path}[{index}]")
                result.update({k: origin or DEFAULT for k in inner})
        elif isinstance(value, BaseModel):
            nested_file = from_file.get(name)
            inner = sources(value, nested_file if isinstance(nested_file, Mapping) else {}, variables, path)
            # A section a variable sets whole (as JSON) is the variable's down to its defaults.
            whole = origin.startswith(ENV)
            result.update({k: origin if whole and v == DEFAULT else v for k, v in inner.items()})
        else:
            result[path] = origin or DEFAULT
    return result
