"""A region's fault switches as callers see them: the path, the operator's signature, bounds, client.

The region serves them (bookstore.region.faults, which says what each switch does); the supervisor's
control API flips them through `switch_faults`. Both processes share this contract, not each other.
"""

from __future__ import annotations

import ssl
from collections.abc import Mapping
from typing import Any, Final

import httpx
import orjson

from bookstore.kernel.auth import PeerAuth
from bookstore.ports import Clock

FAULTS_PATH: Final = "/replication/faults"
OPERATOR: Final = "operator"
# Two hours: room for the one-hour skew the regions' clock bound is tested with (issue 12 item 5). A skew
# beyond a minute also puts the region outside its peers' signed requests' window: they refuse each other.
MAX_SKEW_MS = 7_200_000
# A minute, the link simulator's bound on a delay too (netsim.simulator.MAX_DELAY_MS).
MAX_SLOW_MS = 60_000


async def switch_faults(
    api_url: str,
    region: str,
    secret: str,
    clock: Clock,
    switches: Mapping[str, str | int | list[str] | dict[str, int] | None],
    *,
    verify: ssl.SSLContext | bool = True,
) -> dict[str, Any]:
    """Ask `region` (at its API base URL) to switch its faults (api=, s3=, clockSkewMs=, replication=,
    cut=, slow=); `verify`: the deployment's CA with TLS between hosts (runtime.tls.verify).

    Switches given as None are left as they are. Signed as the operator. Raises httpx.HTTPError when the
    region does not answer, RuntimeError when it refuses.
    """
    body = {name: value for name, value in switches.items() if value is not None}
    async with httpx.AsyncClient(
        auth=PeerAuth(secret, OPERATOR, clock, destination=region), timeout=5.0, verify=verify
    ) as client:
        response = await client.post(api_url + FAULTS_PATH, content=orjson.dumps(body))
    if response.status_code != 200:
        raise RuntimeError(
            f"{api_url} refused to switch faults: {response.status_code} {response.text[:300]}"
        )
    state: dict[str, Any] = response.json()
    return state


def switches_of(
    method: str, path: str, body: Mapping[str, Any] | None
) -> tuple[str, dict[str, str | int]] | None:
    """The region and the switches a control API call stands for (`POST /api/R/break`, `/s3/R/repair`,
    `/clock/R`), or None for any other call.

    Without a supervisor (regions on their own hosts) callers ask the region itself (`switch_faults`).
    """
    parts = path.strip("/").split("/")
    if method != "POST":
        return None
    if len(parts) == 3 and parts[0] in ("api", "s3") and parts[2] in ("break", "repair"):
        broken = {"api": "broken", "s3": "unavailable"}[parts[0]]
        return parts[1], {parts[0]: broken if parts[2] == "break" else "ok"}
    if len(parts) == 2 and parts[0] == "clock":
        return parts[1], {"clockSkewMs": int((body or {}).get("skewMs", 0))}
    return None
