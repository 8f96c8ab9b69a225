"""OpenTelemetry traces (the [otel] extra): one trace from the edge's request to the change's replication.

A process builds a `Tracing` once, at start-up, when traces have somewhere to go (`configure`); without
one nothing here is installed and no request pays for tracing. With one, its composition root wires:

- `middleware`: a span per HTTP request (the edge's, a region's handler), parented by the request's
  `traceparent`; the edge passes its own span's on to the region (`propagate`);
- `bind`: each group-commit unit runs in its request's context, inside a span of its SQLite write;
- `traceparent`: what the SQLite tables store with each change record (and the replication wire carries);
- `applied`: the replicator's hook, a span per trace of the changes a batch applied, parented by the
  change's stored traceparent, so the other region's apply joins the request's trace.
"""

from __future__ import annotations

import contextvars
import os
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Protocol, TypeVar

from starlette.types import ASGIApp, Message, Receive, Scope, Send

from bookstore.config import Topology
from bookstore.extras import require

if TYPE_CHECKING:
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import SpanExporter

T = TypeVar("T")
TRACEPARENT = b"traceparent"
TRACESTATE = b"tracestate"
# Not traced: replication's own long-lived streams and calls (their changes are, by `applied`), scrapes
# and health checks (one span a second per checker would bury the requests).
UNTRACED = ("/replication/", "/_replication/", "/metrics", "/health", "/edge/")
# The user agent of the edge's health checks (edge.app), not traced.
HEALTH_CHECKER = b"bookstore-edge-health"
# The standard variables of the OTLP exporter: either one turns tracing on.
OTLP_VARIABLES = ("OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_ENDPOINT")


class Traced(Protocol):
    """What `applied` reads of a change (replication.tables.model.LogEntry)."""

    @property
    def table(self) -> str: ...

    @property
    def trace(self) -> str | None: ...


def configure(topology: Topology, service: str, exporter: SpanExporter | None = None) -> Tracing | None:
    """The process's tracing, or None when traces have nowhere to go (then install nothing).

    Traces go to `exporter` when given (tests: an in-memory one), else by OTLP over HTTP to the
    topology's `[observability] otlp_endpoint`, else to the standard OTEL_EXPORTER_OTLP_(TRACES_)ENDPOINT.
    """
    endpoint = topology.observability.otlp_endpoint
    if exporter is None and endpoint is None and not any(os.environ.get(v) for v in OTLP_VARIABLES):
        return None
    require("opentelemetry.sdk", "tracing ([observability] otlp_endpoint or OTEL_EXPORTER_OTLP_ENDPOINT)")
    from opentelemetry.sdk.resources import Resource
    from opentelemetry.sdk.trace import TracerProvider
    from opentelemetry.sdk.trace.export import BatchSpanProcessor, SimpleSpanProcessor

    provider = TracerProvider(resource=Resource.create({"service.name": f"bookstore-{service}"}))
    if exporter is not None:
        provider.add_span_processor(SimpleSpanProcessor(exporter))
    else:
        from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

        # The topology's endpoint is the collector's base URL, as OTEL_EXPORTER_OTLP_ENDPOINT is.
        url = None if endpoint is None else endpoint.rstrip("/") + "/v1/traces"
        provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter(endpoint=url)))
    return Tracing(provider, service)


class Tracing:
    """The hooks a process installs when it traces (see the module's doc)."""

    def __init__(self, provider: TracerProvider, service: str) -> None:
        from opentelemetry import context, trace
        from opentelemetry.trace.propagation.tracecontext import TraceContextTextMapPropagator

        self.provider = provider
        self.service = service
        self.tracer = provider.get_tracer("bookstore")
        self.trace_api = trace
        self.context_api = context
        self.propagator = TraceContextTextMapPropagator()

    def middleware(self, app: ASGIApp, *, propagate: bool = False) -> ASGIApp:
        """`app` with a span per HTTP request; `propagate`: pass this span's traceparent on (the edge)."""
        return _TracedHttp(self, app, propagate)

    def traceparent(self) -> str | None:
        """The W3C traceparent of the current span, None outside any."""
        span = self.trace_api.get_current_span().get_span_context()
        if not span.is_valid:
            return None
        return f"00-{span.trace_id:032x}-{span.span_id:016x}-{int(span.trace_flags):02x}"

    def bind(self, unit: Callable[[], T]) -> Callable[[], T]:
        """`unit` to run later, in the current (request's) context, inside a span of its SQLite write."""
        context = contextvars.copy_context()
        tracer = self.tracer

        def traced() -> T:
            with tracer.start_as_current_span(
                "sqlite write", attributes={"db.system": "sqlite", "db.operation": "transaction"}
            ):
                return unit()

        return lambda: context.run(traced)

    def applied(self, region: str) -> Callable[[str, Sequence[Traced], int, int], None]:
        """The replicator's hook: a span per trace among the changes a batch from `source` applied."""
        from opentelemetry.trace import SpanKind

        def hook(source: str, entries: Sequence[Traced], start_ns: int, end_ns: int) -> None:
            traces: dict[str, list[Traced]] = {}
            for entry in entries:
                if entry.trace is not None:
                    traces.setdefault(entry.trace, []).append(entry)
            for traceparent, changes in traces.items():
                parent = self.propagator.extract({"traceparent": traceparent})
                span = self.tracer.start_span(
                    "replicate",
                    context=parent,
                    kind=SpanKind.CONSUMER,
                    start_time=start_ns,
                    attributes={
                        "bookstore.replication.source": source,
                        "bookstore.replication.destination": region,
                        "bookstore.replication.tables": sorted({c.table for c in changes}),
                        "bookstore.replication.changes": len(changes),
                    },
                )
                span.end(end_time=end_ns)

        return hook

    def shutdown(self) -> None:
        """Export what is still buffered and stop."""
        self.provider.shutdown()


class _TracedHttp:
    """A span per HTTP request around `app`, in the context of the request's traceparent."""

    def __init__(self, tracing: Tracing, app: ASGIApp, propagate: bool) -> None:
        from opentelemetry.trace import SpanKind, Status, StatusCode

        self.tracing = tracing
        self.app = app
        self.propagate = propagate
        self._server = SpanKind.SERVER
        self._error = Status(StatusCode.ERROR)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["path"].startswith(UNTRACED):
            await self.app(scope, receive, send)
            return
        tracing = self.tracing
        carrier = {}
        for name, value in scope["headers"]:
            if name in (TRACEPARENT, TRACESTATE):
                carrier[name.decode()] = value.decode("latin-1")
            elif name == b"user-agent" and value == HEALTH_CHECKER:
                # The edge's health checks (one a second per target) would bury the requests.
                await self.app(scope, receive, send)
                return
        parent = tracing.propagator.extract(carrier)
        method: str = scope["method"]
        span = tracing.tracer.start_span(
            f"{tracing.service} {method}",
            context=parent,
            kind=self._server,
            attributes={"http.request.method": method, "url.path": scope["path"]},
        )
        token = tracing.context_api.attach(tracing.trace_api.set_span_in_context(span, parent))
        if self.propagate:
            headers = [(k, v) for k, v in scope["headers"] if k not in (TRACEPARENT, TRACESTATE)]
            headers.append((TRACEPARENT, (tracing.traceparent() or "").encode()))
            scope = {**scope, "headers": headers}
        status = 500

        async def traced_send(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                for name, value in message.get("headers", ()):
                    if name == b"x-request-id":
                        span.set_attribute("bookstore.request_id", value.decode("latin-1"))
            await send(message)

        try:
            await self.app(scope, receive, traced_send)
        except BaseException as exc:
            span.record_exception(exc)
            raise
        finally:
            route = getattr(scope.get("route"), "path", None)
            if route is not None:
                span.update_name(f"{method} {route}")
                span.set_attribute("http.route", route)
            span.set_attribute("http.response.status_code", status)
            if status >= 500:
                span.set_status(self._error)
            span.end()
            tracing.context_api.detach(token)
