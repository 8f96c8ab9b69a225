"""/openapi.json tells the truth (issue 18): success schemas, real errors only, bearer auth, no 422.

That every real answer matches the document is checked on every request of the integration tests
(tests/support/openapi_check.py) and by schema fuzzing (tests/security/test_schema_fuzz.py); here the
document's own promises, and the checker's ability to fail.
"""

from __future__ import annotations

from typing import Any

import pytest
from fastapi import FastAPI
from pydantic import BaseModel
from starlette.responses import JSONResponse, Response

from bookstore.api.responses import install_error_handlers
from bookstore.kernel.openapi import error_answers, without_422
from tests.support.openapi_check import CheckedClient, Undocumented

# What needs a signed-in user: the cart, orders, sign-out and the blog's writes.
SIGNED_IN = {
    ("post", "/auth/signout"),
    ("get", "/cart"),
    ("post", "/cart"),
    ("put", "/cart"),
    ("delete", "/cart"),
    ("get", "/cart/{book_id}"),
    ("delete", "/cart/{book_id}"),
    ("get", "/orders"),
    ("post", "/orders"),
    ("post", "/blog/wp-json/wp/v2/posts"),
    ("put", "/blog/wp-json/wp/v2/posts/{post_id}"),
    ("delete", "/blog/wp-json/wp/v2/posts/{post_id}"),
    ("post", "/blog/wp-json/wp/v2/comments"),
}
ERROR_REF = {"$ref": "#/components/schemas/ErrorBody"}


def operations(document: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [(method, path, op) for path, ops in document["paths"].items() for method, op in ops.items()]


@pytest.fixture
def document(client: CheckedClient) -> dict[str, Any]:
    return client.openapi.document


def test_no_422_anywhere(document: dict[str, Any]) -> None:
    assert [(m, p) for m, p, op in operations(document) if "422" in op["responses"]] == []
    assert not {"HTTPValidationError", "ValidationError"} & set(document["components"]["schemas"])


def test_every_success_answer_has_a_schema_and_every_error_the_error_body(document: dict[str, Any]) -> None:
    for method, path, op in operations(document):
        answers = op["responses"]
        successes = [s for s in answers if s.startswith("2")]
        assert successes, (method, path)
        for status in successes:
            (media,) = answers[status]["content"]
            schema = answers[status]["content"][media]["schema"]
            assert schema != {} and (
                media == "text/html" or schema.get("type") != "object" or schema.get("properties")
            )
        for status in (s for s in answers if s.startswith(("4", "5"))):
            schema = answers[status]["content"]["application/json"]["schema"]
            assert schema == ERROR_REF or set(schema["required"]) == {"error", "message"}, (
                method,
                path,
                status,
            )


def test_bearer_auth_is_a_security_scheme_on_the_routes_that_need_it(document: dict[str, Any]) -> None:
    assert document["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": document["components"]["securitySchemes"]["bearer"]["description"],
    }
    secured = {(m, p) for m, p, op in operations(document) if op.get("security") == [{"bearer": []}]}
    assert secured == SIGNED_IN
    for method, path, op in operations(document):
        assert "authorization" not in {p["name"].lower() for p in op.get("parameters", [])}, (method, path)


def test_the_signed_in_routes_answer_401_without_a_token(
    client: CheckedClient, document: dict[str, Any]
) -> None:
    for method, path in SIGNED_IN:
        assert "401" in document["paths"][path][method]["responses"], (method, path)
        concrete = path.replace("{book_id}", "bk-cook-001").replace("{post_id}", "1")
        assert client.request(method.upper(), concrete).status_code == 401, (method, path)


def test_delete_cart_takes_no_body(document: dict[str, Any]) -> None:
    operation = document["paths"]["/cart"]["delete"]
    assert "requestBody" not in operation
    assert [(p["name"], p["in"], p["required"]) for p in operation["parameters"]] == [
        ("bookId", "query", True)
    ]


# ---- the checker fails on what the document does not describe ------------------------------------------


class Thing(BaseModel):
    name: str


def small_app(status: int, body: Any) -> FastAPI:
    app = FastAPI()
    install_error_handlers(app)

    @app.get("/thing", response_model=Thing, responses=error_answers(404))
    async def thing() -> Response:
        return JSONResponse(body, status_code=status)

    @app.get("/hidden", include_in_schema=False)
    async def hidden() -> Response:
        return JSONResponse({"name": "a route the document does not show"})

    generate = app.openapi
    app.openapi = lambda: without_422(generate())  # type: ignore[method-assign]
    return app


@pytest.mark.parametrize(
    ("status", "body", "wrong"),
    [
        (200, {"name": "a"}, None),
        (404, {"error": "NotFound", "message": "no thing"}, None),
        (409, {"error": "Conflict", "message": "a status the document does not list"}, "lists only"),
        (200, {"name": 1}, "is not of type 'string'"),
        (200, {}, "'name' is a required property"),
        (404, {"detail": "not our error body"}, "required property"),
    ],
)
def test_the_checker_fails_on_an_undocumented_answer(status: int, body: Any, wrong: str | None) -> None:
    with CheckedClient(small_app(status, body)) as client:
        if wrong is None:
            assert client.get("/thing").status_code == status
        else:
            with pytest.raises(Undocumented, match=wrong):
                client.get("/thing")
        assert client.get("/nowhere").status_code == 404  # no route: the 404 error body is expected
        with pytest.raises(Undocumented, match="undocumented, answered 200"):
            client.get("/hidden")
