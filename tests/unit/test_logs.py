"""The JSON log format and request ids: every line parses, with its event and fields; ids are bounded."""

from __future__ import annotations

import io
import json
import logging
import os
from collections.abc import Iterator

import pytest

from bookstore.kernel import request_ids
from bookstore.runtime import logs


@pytest.fixture
def captured() -> Iterator[io.StringIO]:
    root = logging.getLogger()
    handlers, level = root.handlers[:], root.level
    logs.configure("eu-west-1", log_format="json")
    stream = io.StringIO()
    root.handlers[0].setStream(stream)  # type: ignore[attr-defined]
    yield stream
    root.handlers[:] = handlers
    root.setLevel(level)


def test_a_json_line_has_timestamp_level_region_event_and_fields(captured: io.StringIO) -> None:
    log = logging.getLogger("bookstore.edge")
    log.info("event=retry record=%s from=%s reason=%s", "api", "eu-west-1", "answered 503")
    log.warning("plain words", extra={"request_id": "abc123", "status": 503})
    try:
        raise RuntimeError("boom")
    except RuntimeError:
        log.exception("event=edge_error path=/x")
    first, second, third = (json.loads(line) for line in captured.getvalue().splitlines())
    assert first["timestamp"].endswith("Z") and first["timestamp"][10] == "T"
    assert first["level"] == "INFO"
    assert first["region"] == "eu-west-1"
    assert first["event"] == "retry"
    assert first["fields"] == {"record": "api", "from": "eu-west-1", "reason": "answered 503"}
    assert second["event"] == "bookstore.edge"
    assert second["fields"] == {"request_id": "abc123", "status": 503}
    assert third["level"] == "ERROR" and "RuntimeError: boom" in third["exception"]


def test_the_text_format_stays_the_default() -> None:
    root = logging.getLogger()
    handlers = root.handlers[:]
    try:
        logs.configure("edge")
        assert not isinstance(root.handlers[0].formatter, logs.JsonFormatter)
    finally:
        root.handlers[:] = handlers


@pytest.mark.parametrize("given", [b"abc-123", b"A.b_c:d", b"x" * request_ids.MAX_LENGTH])
def test_a_plain_bounded_request_id_is_kept(given: bytes) -> None:
    assert request_ids.accepted(given) == given


@pytest.mark.parametrize(
    "given", [None, b"", b"x" * (request_ids.MAX_LENGTH + 1), b"a b", b"a\r\nset-cookie: x", "é".encode()]
)
def test_an_unusable_request_id_is_replaced_by_a_fresh_one(given: bytes | None) -> None:
    fresh = request_ids.accepted(given)
    assert fresh != given and len(fresh) == 16 and int(fresh, 16) >= 0


def test_log_format_option_overrides_the_topology_and_reaches_child_processes(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from bookstore.cli.options import LOG_FORMAT_ENV, LogFormat, with_log_format
    from bookstore.config import Topology

    # Set then removed: the variable `with_log_format` sets is taken away again after the test.
    monkeypatch.setenv(LOG_FORMAT_ENV, "text")
    monkeypatch.delenv(LOG_FORMAT_ENV)
    assert with_log_format(Topology(), None).observability.log_format == "text"
    topology = with_log_format(Topology(), LogFormat.json)
    assert topology.observability.log_format == "json"
    # The regions and the edge that `up` starts load the topology with this variable.
    assert Topology.load(environ={LOG_FORMAT_ENV: "json"}).observability.log_format == "json"
    assert os.environ[LOG_FORMAT_ENV] == "json"
