"""The supervisor's control API: the regions (kill, stop, start), the edge, the fault switches, the links.

It answers only to the operator token, never to a browser (bookstore.runtime.operator.ControlGuard).
"""

from __future__ import annotations

import signal
from typing import Any, Protocol

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Mount, Route

from bookstore.config import Topology
from bookstore.kernel.http import json_response
from bookstore.netsim.control import create_control_app
from bookstore.netsim.simulator import LinkSimulator
from bookstore.runtime.operator import ControlGuard, control_hosts
from bookstore.supervisor.edge_process import EdgeProcess
from bookstore.supervisor.faults import FaultSwitches


class RegionProcesses(Protocol):
    """The region processes the control API acts on (supervisor.processes.Supervisor)."""

    async def start_region(self, region_id: str) -> dict[str, Any]: ...
    async def kill_region(self, region_id: str, sig: int = signal.SIGKILL) -> dict[str, Any]: ...
    def region_state(self, region_id: str) -> dict[str, Any]: ...


def control_app(
    topology: Topology,
    token: str,
    regions: RegionProcesses,
    edge: EdgeProcess,
    faults: FaultSwitches,
    links: LinkSimulator,
) -> ControlGuard:
    """The control API, behind its guard (the operator token; no browser; its own Host; JSON only)."""
    actions = {
        "kill": lambda r: regions.kill_region(r, signal.SIGKILL),
        "stop": lambda r: regions.kill_region(r, signal.SIGTERM),
        "start": regions.start_region,
    }

    async def all_regions(_: Request) -> Response:
        return json_response({"regions": [regions.region_state(r.id) for r in topology.regions]})

    async def act(request: Request) -> Response:
        region_id, action = request.path_params["region"], request.path_params["action"]
        if action not in actions:
            return json_response(
                {"error": "NotFound", "message": f"no action {action!r}; use kill, stop or start"}, 404
            )
        try:
            topology.region(region_id)
        except KeyError as exc:
            return json_response({"error": "NotFound", "message": str(exc.args[0])}, 404)
        try:
            return json_response(await actions[action](region_id))
        except RuntimeError as exc:
            return json_response({"error": "Unavailable", "message": str(exc)}, 503)

    async def edge_state(_: Request) -> Response:
        return json_response(edge.state())

    app = Starlette(
        routes=[
            Route("/regions", all_regions, methods=["GET"]),
            Route("/regions/{region}/{action}", act, methods=["POST"]),
            Route("/edge", edge_state, methods=["GET"]),
            *faults.routes(),
            Mount("", app=create_control_app(links)),
        ]
    )
    hosts = control_hosts(topology.control_address, topology.control_port)
    return ControlGuard(app, token, hosts)
