"""One request followed across processes: the edge, a region's handler and SQLite write, the other region's
apply of the change, in one trace (in-memory exporter); its id in the region's JSON access log line."""

from __future__ import annotations

import io
import json
import logging
import time
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from pathlib import Path

import httpx
import pytest

from bookstore.edge.server import build, server_config
from bookstore.region.compose import compose
from bookstore.runtime import logs, tracing
from bookstore.runtime.listeners import listening_socket
from bookstore.runtime.listeners import server_config as region_config
from bookstore.runtime.secret import deployment_credentials
from bookstore.services.catalog import seed_books
from tests.support.link_simulator import links
from tests.support.regions import isolated_topology
from tests.support.threaded_server import serving
from tests.support.waiting import wait_for

pytest.importorskip("opentelemetry.sdk")
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

EU, AP = "eu-west-1", "ap-southeast-1"
OBSERVABILITY = '\n[observability]\nlog_format = "json"\naccess_log = true\n'
PASSWORD = "correct horse battery"


@contextmanager
def access_lines() -> Iterator[io.StringIO]:
    """The access log's lines, formatted as `--log-format json` formats them."""
    stream = io.StringIO()
    handler = logging.StreamHandler(stream)
    handler.setFormatter(logs.JsonFormatter())
    logger = logging.getLogger(logs.ACCESS)
    logger.addHandler(handler)
    level = logger.level
    logger.setLevel(logging.INFO)
    try:
        yield stream
    finally:
        logger.removeHandler(handler)
        logger.setLevel(level)


def wait_for_span(
    exporter: InMemorySpanExporter, name: str, table: str, timeout_s: float = 20.0
) -> list[ReadableSpan]:
    """All finished spans once one called `name` has applied a change to `table`.

    Waiting for any span of that name is not enough: the sign-in's own write (another trace) may be
    applied in the other region first, before the cart's."""
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        spans = list(exporter.get_finished_spans())
        if any(s.name == name and table in _tables(s) for s in spans):
            return spans
        time.sleep(0.1)
    raise AssertionError(f"no {name!r} span for {table} in {[s.name for s in exporter.get_finished_spans()]}")


def _tables(span: ReadableSpan) -> tuple[str, ...]:
    """The tables of the changes a "replicate" span applied (none for another span)."""
    tables = (span.attributes or {}).get("bookstore.replication.tables", ())
    return tuple(tables) if isinstance(tables, (list, tuple)) else ()


def test_a_request_id_and_trace_follow_a_write_from_the_edge_to_the_other_region(tmp_path: Path) -> None:
    topology, _ = isolated_topology(tmp_path / "topology.toml", edge="", extra=OBSERVABILITY)
    data = tmp_path / "data"
    credentials = deployment_credentials(data)
    exporter = InMemorySpanExporter()
    with ExitStack() as stack, access_lines() as lines:
        stack.enter_context(links(topology))
        regions = {}
        for region_id in (EU, AP):
            traces = tracing.configure(topology, region_id, exporter)
            composed = compose(topology, region_id, data, traces)
            stack.callback(composed.services.close)
            region = topology.region(region_id)
            config = region_config(
                composed.app, lifespan="on", proxy_headers=False, timeout_graceful_shutdown=3
            )
            stack.enter_context(serving(config, listening_socket(region.address, region.api_port), 20))
            # As the region process does at shutdown: end the long-lived replication streams first.
            stack.callback(composed.end_streams)
            regions[region_id] = composed
        regions[EU].services.catalog.load(seed_books())
        regions[EU].services.identity.add_user("trace@example.com", PASSWORD)
        edge_app = build(
            topology, dns=False, credentials=credentials, traces=tracing.configure(topology, "edge", exporter)
        )
        edge = topology.edge
        stack.enter_context(serving(server_config(edge_app), listening_socket(edge.address, edge.port), 20))

        # Singapore first catches up with Ireland's seed (a snapshot, which carries no traces); only then
        # is the traced write sure to reach it through the replication stream, the path traced here.
        ap_api = topology.region(AP).api_url
        wait_for(
            "Singapore holds Ireland's seed",
            lambda: httpx.get(f"{ap_api}/books/bk-cook-001", timeout=5).status_code,
            lambda status: status == 200,
            timeout=60,
        )
        with httpx.Client(base_url=edge.url, headers={"X-Client-Region": EU}, timeout=10) as client:
            signed_in = client.post(
                "/api/auth/signin", json={"email": "trace@example.com", "password": PASSWORD}
            )
            assert signed_in.status_code == 200, signed_in.text
            token = signed_in.json()["accessToken"]
            added = client.post(
                "/api/cart",
                json={"bookId": "bk-cook-001", "quantity": 2},
                headers={"Authorization": f"Bearer {token}", "X-Request-Id": "trace-me-42"},
            )
        assert added.status_code == 201, added.text
        assert added.headers["x-request-id"] == "trace-me-42"
        assert added.headers["x-edge-origin"] == EU

        spans = wait_for_span(exporter, "replicate", "carts")
        logged = [json.loads(line) for line in lines.getvalue().splitlines()]

    # The region's JSON access line names the edge's request id.
    mine = [line for line in logged if line.get("fields", {}).get("request_id") == "trace-me-42"]
    assert any(
        line["region"] == EU and line["event"] == "request" and line["fields"]["route"] == "/cart"
        for line in mine
    ), logged

    # One trace: the edge's request, the region's handler, its SQLite write, the other region's apply.
    edge_span = next(
        s
        for s in spans
        if s.kind.name == "SERVER"
        and s.resource.attributes["service.name"] == "bookstore-edge"
        and s.attributes is not None
        and s.attributes.get("bookstore.request_id") == "trace-me-42"
    )
    assert edge_span.context is not None
    trace_id = edge_span.context.trace_id
    in_trace = [s for s in spans if s.context is not None and s.context.trace_id == trace_id]
    by_name = {s.name: s for s in in_trace}
    handler = by_name["POST /cart"]
    assert handler.resource.attributes["service.name"] == f"bookstore-{EU}"
    assert handler.parent is not None and handler.parent.span_id == edge_span.context.span_id
    assert handler.attributes is not None and handler.attributes["bookstore.request_id"] == "trace-me-42"
    write = by_name["sqlite write"]
    assert write.parent is not None and handler.context is not None
    assert write.parent.span_id == handler.context.span_id
    applied = by_name["replicate"]
    assert applied.resource.attributes["service.name"] == f"bookstore-{AP}"
    assert applied.attributes is not None
    assert applied.attributes["bookstore.replication.source"] == EU
    assert "carts" in applied.attributes["bookstore.replication.tables"]  # type: ignore[operator]
    assert applied.parent is not None and write.context is not None
    assert applied.parent.span_id == write.context.span_id
