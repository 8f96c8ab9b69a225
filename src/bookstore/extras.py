"""Optional packages (pyproject extras): import one a feature needs, or say which extra installs it."""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from types import ModuleType

from bookstore.config import Topology

# The import name of each optional package and the extra that installs it.
EXTRAS: dict[str, str] = {
    "redis": "redis",
    "pymysql": "mysql",
    "matplotlib": "report",
    "boto3": "aws",
    # opentelemetry itself (the API) comes with FastAPI; the SDK and the exporter are the extra's.
    "opentelemetry.sdk": "otel",
}


class MissingExtra(RuntimeError):
    """A feature needs a package of an extra that is not installed; the message says what to install."""

    def __init__(self, feature: str, module: str) -> None:
        extra = EXTRAS[module]
        self.feature, self.module, self.extra = feature, module, extra
        self.message = (
            f"{feature} needs the [{extra}] extra ({module} is not installed): "
            f"pip install 'bookstore[{extra}]' (in a clone: .venv/bin/pip install -c requirements.lock "
            f"-e '.[{extra}]')"
        )
        super().__init__(self.message)


def require(module: str, feature: str) -> ModuleType:
    """The optional package `module`, imported; MissingExtra naming its extra when it is not installed."""
    try:
        return importlib.import_module(module)
    except ModuleNotFoundError as exc:
        if exc.name is not None and (exc.name.split(".")[0] == module or module.startswith(exc.name)):
            raise MissingExtra(feature, module) from None
        raise


@dataclass(frozen=True)
class _Need:
    module: str
    feature: str


def _needs(topology: Topology) -> list[_Need]:
    needs = []
    if topology.storage.ranking == "redis":
        needs.append(_Need("redis", '[storage] ranking = "redis"'))
    if topology.storage.blog == "mysql":
        needs.append(_Need("pymysql", '[storage] blog = "mysql"'))
    if topology.observability.otlp_endpoint is not None:
        needs.append(_Need("opentelemetry.sdk", "[observability] otlp_endpoint"))
    return needs


def check_topology(topology: Topology) -> None:
    """Raises MissingExtra for the first engine the topology chooses whose extra is not installed."""
    for need in _needs(topology):
        require(need.module, need.feature)
