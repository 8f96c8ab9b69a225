"""The runtime install alone (what `make up` installs) runs the command line and serves a region.

A fresh virtual environment, no system site packages, `pip install -c requirements.lock .` as the
Makefile's runtime step does: the command line answers, the region's, the edge's and the supervisor's
modules import, a region process serves /health, and none of the extras' or development packages is
there (so nothing in that path leans on one of them).
"""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import httpx
import pytest

from tests.support.regions import isolated_topology

pytestmark = pytest.mark.system

ROOT = Path(__file__).resolve().parents[2]
# The region process and everything `bookstore up` imports on its way to start one.
PROCESS_MODULES = [
    "bookstore.cli.system",
    "bookstore.region.process",
    "bookstore.region.compose",
    "bookstore.edge.server",
    "bookstore.supervisor.processes",
    "bookstore.objectstore.setup",
]
# Packages of the extras and of [dev]: the runtime install must not bring them.
NOT_INSTALLED = ["redis", "pymysql", "matplotlib", "opentelemetry.sdk", "awscli", "moto", "pytest", "mypy"]


def run(*args: str | Path, timeout: float = 600) -> subprocess.CompletedProcess[str]:
    done = subprocess.run([str(a) for a in args], capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{' '.join(map(str, args))}:\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def test_the_runtime_install_alone_runs_the_command_line_and_a_region(tmp_path: Path) -> None:
    venv = tmp_path / "venv"
    run(sys.executable, "-m", "venv", venv)
    python, bookstore = venv / "bin" / "python", venv / "bin" / "bookstore"
    # A copy of the source, so that building it leaves nothing in the working tree.
    source = tmp_path / "src-copy"
    source.mkdir()
    for name in ("pyproject.toml", "README.md", "requirements.lock"):
        (source / name).write_bytes((ROOT / name).read_bytes())
    run("cp", "-r", ROOT / "src", source / "src")
    for egg in (source / "src").glob("*.egg-info"):
        run("rm", "-r", egg)
    run(python, "-m", "pip", "install", "-q", "-c", source / "requirements.lock", source)

    helped = run(bookstore, "--help")
    assert "A multi-region Bookstore" in helped.stdout
    assert run(bookstore, "--version").stdout.startswith("bookstore ")
    probe = (
        "import importlib, importlib.util\n"
        f"for name in {PROCESS_MODULES!r}: importlib.import_module(name)\n"
        f"print([n for n in {NOT_INSTALLED!r} if importlib.util.find_spec(n) is not None])\n"
    )
    assert run(python, "-c", probe).stdout.strip() == "[]"

    topology, topology_file = isolated_topology(tmp_path / "topology.toml", regions=("eu-west-1",))
    region = topology.region("eu-west-1")
    log = (tmp_path / "region.log").open("wb")
    env = {k: v for k, v in os.environ.items() if k != "PYTHONPATH"}
    process = subprocess.Popen(
        [
            bookstore,
            "region",
            "serve",
            "--region",
            region.id,
            "--data-dir",
            tmp_path / "data",
            "--topology",
            topology_file,
        ],
        stdout=log,
        stderr=subprocess.STDOUT,
        env=env,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            assert process.poll() is None, (tmp_path / "region.log").read_text()[-3000:]
            try:
                if httpx.get(f"{region.api_url}/health", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert time.monotonic() < deadline, "the region did not answer /health"
            time.sleep(0.2)
        assert httpx.get(f"{region.api_url}/books", timeout=5).status_code == 200
    finally:
        process.terminate()
        process.wait(timeout=30)
