"""The API function: API Gateway (HTTP API, payload 2.0) events to the region's ASGI app, by Mangum.

Built at the first invocation of an instance (a cold start) and kept for the instance's life.
"""

from __future__ import annotations

from typing import Any

_handler: Any = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        from mangum import Mangum

        from bookstore.cloud.lambdas.compose import LambdaEnvironment, api_app, build_services

        _handler = Mangum(api_app(build_services(LambdaEnvironment.from_env())), lifespan="auto")
    answer: dict[str, Any] = _handler(event, context)
    return answer
