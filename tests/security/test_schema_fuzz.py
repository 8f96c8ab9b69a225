"""Schema fuzzing: requests generated from each region's /openapi.json never get a 5xx, and every answer is
one the document describes (its status listed for the operation, its content type and its schema).

schemathesis generates, for every operation the document describes, EXAMPLES requests that follow the
schema and EXAMPLES that break it (wrong types, missing fields, values out of range), and sends them to
the region's app in this process, signed in as an author so that the checks behind authentication run
too. The one 5xx allowed is the documented 503 of a read-only blog replica asked to write. schemathesis's
own checks hold each answer to the document (issue 18): its status, content type, schema and headers
are the listed ones, and an operation that declares the bearer scheme refuses a request without a valid
token (ignored_auth).

schemathesis's pytest plugin does not load with this pytest; its Hypothesis strategies are driven
from a plain test instead.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import suppress
from pathlib import Path
from typing import Any

import pytest
import schemathesis
from hypothesis import HealthCheck, given, settings
from hypothesis.errors import Unsatisfiable
from schemathesis import GenerationMode
from schemathesis.checks import (
    content_type_conformance,
    ignored_auth,
    response_headers_conformance,
    response_schema_conformance,
    status_code_conformance,
)
from schemathesis.core.failures import FailureGroup
from schemathesis.core.result import Err, Ok
from starlette.testclient import TestClient

from bookstore.config import Topology
from bookstore.region.compose import build_region, region_app
from bookstore.region.services import RegionServices
from bookstore.services.catalog import seed_books

EXAMPLES = 20
CONFORMANCE = [
    status_code_conformance,
    content_type_conformance,
    response_schema_conformance,
    response_headers_conformance,
    ignored_auth,
]
AUTHOR = ("fuzz-author@example.com", "fuzz-author-password")
# Ireland holds the blog's primary in the default topology; Singapore a read-only replica.
REGIONS = ("eu-west-1", "ap-southeast-1")
FUZZ = settings(
    max_examples=EXAMPLES,
    deadline=None,
    database=None,
    suppress_health_check=list(HealthCheck),
)


@pytest.fixture(params=REGIONS)
def region(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[tuple[RegionServices, Any]]:
    services = build_region(Topology(), request.param, tmp_path)
    services.catalog.load(seed_books())
    services.identity.add_user(*AUTHOR, role="author")
    app = region_app(services)
    try:
        with TestClient(app, raise_server_exceptions=False):  # runs the app's lifespan (consumers)
            yield services, app
    finally:
        services.close()


def allowed(services: RegionServices, label: str, status: int, body: str) -> bool:
    """Whether an answer is one the API may give: below 500, or a blog replica's documented 503."""
    if status < 500:
        return True
    method, _, path = label.partition(" ")
    return (
        status == 503
        and services.region.id != REGIONS[0]
        and method in ("POST", "PUT", "DELETE")
        and path.startswith("/blog/")
        and "primary" in body
    )


def described(exc: AssertionError | FailureGroup) -> str:
    """What schemathesis found wrong, check by check (a FailureGroup's own text only counts them)."""
    found = exc.exceptions if isinstance(exc, FailureGroup) else (exc,)
    return "; ".join(
        f"{getattr(f, 'title', type(f).__name__)}: {getattr(f, 'message', f)}"[:300] for f in found
    )


def test_no_generated_request_gets_a_5xx_or_an_undocumented_answer(
    region: tuple[RegionServices, Any],
) -> None:
    services, app = region
    with TestClient(app) as client:
        signed_in = client.post("/auth/signin", json={"email": AUTHOR[0], "password": AUTHOR[1]})
    token = {"Authorization": f"Bearer {signed_in.json()['accessToken']}"}
    schema = schemathesis.openapi.from_asgi("/openapi.json", app)
    results = list(schema.get_all_operations())
    assert not [result.err() for result in results if isinstance(result, Err)]  # the schema reads whole
    operations = [result.ok() for result in results if isinstance(result, Ok)]
    assert len(operations) > 20, [operation.label for operation in operations]
    failures: list[str] = []
    sent = 0
    for operation in operations:
        for mode in (GenerationMode.POSITIVE, GenerationMode.NEGATIVE):

            @FUZZ
            @given(case=operation.as_strategy(generation_mode=mode))
            def send(case: Any) -> None:
                nonlocal sent
                headers = {} if "Authorization" in (case.headers or {}) else token
                try:
                    response = case.call(headers=headers)
                except Exception as exc:
                    failures.append(f"{case.as_curl_command()}: raised {type(exc).__name__}: {exc}")
                    return
                sent += 1
                if not allowed(services, case.operation.label, response.status_code, response.text):
                    failures.append(f"{case.as_curl_command()}: {response.status_code} {response.text[:300]}")
                try:
                    case.validate_response(response, checks=CONFORMANCE)
                except (AssertionError, FailureGroup) as exc:  # one failed check, or several
                    failures.append(f"{case.as_curl_command()}: not as documented: {described(exc)}")

            # Unsatisfiable: nothing in this operation can be made invalid (no parameters, no body).
            with suppress(Unsatisfiable):
                send()
    assert sent > len(operations) * EXAMPLES
    assert not failures, "\n".join(failures[:20])
