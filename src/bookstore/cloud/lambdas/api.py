"""The API function: API Gateway (HTTP API, payload 2.0) events to the region's ASGI app, by Mangum.

Built at the first invocation of an instance (a cold start) and kept for the instance's life; a change
of the function's configuration (`bookstore aws drill`'s break and repair) starts new instances.
"""

from __future__ import annotations

from typing import Any, cast

_handler: Any = None


def handler(event: dict[str, Any], context: Any) -> dict[str, Any]:
    global _handler
    if _handler is None:
        from mangum import Mangum

        from bookstore.cloud.lambdas.compose import LambdaEnvironment, build_services, lambda_app

        env = LambdaEnvironment.from_env()
        # Mangum's ASGI type is its own protocol; Starlette's callable is the same thing.
        _handler = Mangum(cast(Any, lambda_app(build_services(env), env.region)), lifespan="auto")
    answer: dict[str, Any] = _handler(event, context)
    return answer
