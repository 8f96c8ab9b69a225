"""Tracing is chosen once at start-up: off without an endpoint; on, a change carries its trace context."""

from __future__ import annotations

from pathlib import Path

import pytest

from bookstore import tables
from bookstore.config import Topology
from bookstore.domain.errors import ValidationError
from bookstore.replication.tables.wire import entry_json, parse_entries
from bookstore.runtime import tracing
from bookstore.storage.sqlite.tables import SqliteDatabase

TRACEPARENT = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01"


def test_without_an_endpoint_nothing_is_installed(monkeypatch: pytest.MonkeyPatch) -> None:
    for variable in tracing.OTLP_VARIABLES:
        monkeypatch.delenv(variable, raising=False)
    assert tracing.configure(Topology(), "eu-west-1") is None


def test_the_standard_variable_or_the_setting_turns_it_on(monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("opentelemetry.sdk")
    monkeypatch.setenv("OTEL_EXPORTER_OTLP_ENDPOINT", "http://127.0.0.1:9")
    on = tracing.configure(Topology(), "eu-west-1")
    assert on is not None
    on.provider.shutdown()
    monkeypatch.delenv("OTEL_EXPORTER_OTLP_ENDPOINT")
    topology = Topology.model_validate({"observability": {"otlp_endpoint": "http://127.0.0.1:9"}})
    on = tracing.configure(topology, "edge")
    assert on is not None
    on.provider.shutdown()


def test_a_change_record_keeps_its_traceparent_and_the_wire_carries_it(tmp_path: Path) -> None:
    db = SqliteDatabase(tmp_path / "tables.db", "eu-west-1", trace_context=lambda: TRACEPARENT)
    books = db.table(tables.BOOKS)
    books.put({"id": "b1", "name": "x"})
    untraced = SqliteDatabase(tmp_path / "other.db", "eu-west-1")
    untraced.table(tables.BOOKS).put({"id": "b2", "name": "y"})
    (entry,) = db.read_log(0, limit=10).entries
    (plain,) = untraced.read_log(0, limit=10).entries
    db.close()
    untraced.close()
    assert entry.trace == TRACEPARENT and plain.trace is None
    assert "trace" not in entry_json(plain)
    schemas = {"books": tables.BOOKS}
    regions = ["eu-west-1"]
    (parsed,) = parse_entries([entry_json(entry)], schemas, regions)
    assert parsed.trace == TRACEPARENT
    with pytest.raises(ValidationError):
        parse_entries([{**entry_json(entry), "trace": "not\na traceparent"}], schemas, regions)
