"""`bookstore api` and `bookstore s3`: break and repair a region's API or S3 API through the control API."""

from __future__ import annotations

from typing import Any

import typer

from bookstore.cli.control import region_action

api_app = typer.Typer(
    help="Break and repair a region's API (module 4's failover drill).", no_args_is_help=True
)
s3_app = typer.Typer(
    help="Make a region's S3 API unavailable (503) and back; rotate its SSE-S3 keys.", no_args_is_help=True
)


def _said(region: str, state: Any) -> str:
    applied = "" if state.get("applied", True) else f" ({state.get('message')})"
    return f"{region}: api {state['api']}, s3 {state['s3']}{applied}"


api_app.command("break")(
    region_action(
        "/api/{region}/break",
        _said,
        "The region's API answers 403 to everything (its mapping is gone) while its process keeps running.",
    )
)
api_app.command("repair")(region_action("/api/{region}/repair", _said, "The region's API answers again."))
s3_app.command("break")(
    region_action(
        "/s3/{region}/break",
        _said,
        "The region's S3 API answers 503 ServiceUnavailable (replication between regions keeps going).",
    )
)
s3_app.command("repair")(region_action("/s3/{region}/repair", _said, "The region's S3 API answers again."))
