"""Ownership of a region's data directory (issue 12 item 7): one owner, and commands that respect it."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import uvicorn

from bookstore.config import Topology
from bookstore.region.compose import build_region, region_app
from bookstore.region.services import RegionServices
from bookstore.runtime.secret import deployment_secret
from bookstore.storage.local.ownership import LOCK_FILE, DataDirInUse, own
from tests.support.regions import bookstore, isolated_topology

EU = "eu-west-1"
PASSWORD = "a long enough password"
BUCKET = "owned"

# Takes the directory's ownership, says so, then waits to be killed.
HOLDER = """
import sys, time
from pathlib import Path
from bookstore.storage.local.ownership import own
own(Path(sys.argv[1]), "a test process")
print("owned", flush=True)
time.sleep(600)
"""


def test_a_built_region_owns_its_directory_until_closed(tmp_path: Path) -> None:
    services = build_region(Topology(), EU, tmp_path)
    try:
        with pytest.raises(
            DataDirInUse, match=re.escape(f"{tmp_path / EU} is in use by region {EU} (pid {os.getpid()})")
        ):
            build_region(Topology(), EU, tmp_path, holder="`bookstore seed`")
    finally:
        services.close()
    # Released with close(): the next owner builds it.
    build_region(Topology(), EU, tmp_path).close()


def test_a_refused_builder_runs_no_start_up_work(tmp_path: Path) -> None:
    services = build_region(Topology(), EU, tmp_path)
    try:
        # What the object store's sweep removes at start-up: a temporary file and an unreferenced blob.
        temp = tmp_path / EU / "objects" / "tmp" / "in-flight"
        blob = tmp_path / EU / "objects" / "blobs" / "ab" / "ab-being-committed"
        temp.write_bytes(b"half an upload")
        blob.write_bytes(b"a blob whose row is being committed")
        with pytest.raises(DataDirInUse):
            build_region(Topology(), EU, tmp_path)
        assert temp.exists() and blob.exists()
    finally:
        services.close()


def test_ownership_is_exclusive_across_processes_and_dies_with_its_owner(tmp_path: Path) -> None:
    holder = subprocess.Popen(
        [sys.executable, "-c", HOLDER, str(tmp_path)], stdout=subprocess.PIPE, text=True
    )
    try:
        assert holder.stdout is not None and holder.stdout.readline() == "owned\n"
        with pytest.raises(DataDirInUse, match=rf"in use by a test process \(pid {holder.pid}\)"):
            own(tmp_path, "this test")
        holder.send_signal(signal.SIGKILL)
        holder.wait(10)
        # kill -9 leaves no stale lock: the kernel dropped it with the process.
        own(tmp_path, "this test").release()
        assert (tmp_path / LOCK_FILE).exists()
    finally:
        holder.kill()
        holder.wait(10)


def test_a_new_owner_waits_for_the_current_one_to_finish(tmp_path: Path) -> None:
    current = own(tmp_path, "a short command")
    threading.Timer(0.3, current.release).start()
    started = time.monotonic()
    successor = own(tmp_path, "the region", wait_s=10)
    assert successor.held and time.monotonic() - started < 10
    successor.release()
    with pytest.raises(DataDirInUse):
        held = own(tmp_path, "one")
        try:
            own(tmp_path, "another", wait_s=0.2)
        finally:
            held.release()


@pytest.fixture
def served(tmp_path: Path) -> Iterator[tuple[RegionServices, Path, Path]]:
    """A region owning DATA/eu-west-1 and serving its API (with the operator endpoints) in this process."""
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", (EU,))
    data = tmp_path / "data"
    services = build_region(topology, EU, data)
    app = region_app(services, deployment_secret(data))
    region = topology.home
    server = uvicorn.Server(
        uvicorn.Config(app, host=region.address, port=region.api_port, log_config=None, lifespan="on")
    )
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 20
    while not server.started:
        assert time.monotonic() < deadline and thread.is_alive(), "the region did not start"
        time.sleep(0.05)
    try:
        yield services, data, topo_file
    finally:
        server.should_exit = True
        thread.join(10)
        services.close()


def test_commands_beside_an_upload_in_flight_go_through_the_owner(
    served: tuple[RegionServices, Path, Path],
) -> None:
    services, data, topo_file = served
    store = services.objects
    assert store is not None
    store.create_bucket(BUCKET)
    acknowledged = os.urandom(300_000)
    store.put_object(BUCKET, "acknowledged", acknowledged)
    # An upload in flight: its body streams into the store's temporary file and pauses there.
    halfway, resume = threading.Event(), threading.Event()
    outcome: dict[str, object] = {}

    def body() -> Iterator[bytes]:
        yield b"a" * 200_000
        halfway.set()
        assert resume.wait(120)
        yield b"b" * 200_000

    def upload() -> None:
        try:
            outcome["version"] = store.put_object(BUCKET, "in-flight", body())
        except Exception as exc:
            outcome["error"] = exc

    uploading = threading.Thread(target=upload)
    uploading.start()
    assert halfway.wait(10)
    common = ("--data-dir", str(data), "--topology", str(topo_file))
    try:
        added = bookstore("users", "add", "cli@example.com", "--password", PASSWORD, *common, check=False)
        services.identity.signup("pending@example.com", PASSWORD)
        code = bookstore("users", "confirm-code", "pending@example.com", *common, check=False)
        conflicts = bookstore("conflicts", "--json", *common, check=False)
        seeded = bookstore("seed", *common, check=False)
    finally:
        resume.set()
        uploading.join(30)
    assert "error" not in outcome, outcome
    assert b"".join(store.get_object(BUCKET, "in-flight").body) == b"a" * 200_000 + b"b" * 200_000
    assert b"".join(store.get_object(BUCKET, "acknowledged").body) == acknowledged
    # Each command did its work in the owning region, through its operator endpoint.
    assert added.returncode == 0, added.stderr
    assert services.identity.signin("cli@example.com", PASSWORD)["accessToken"]
    assert code.returncode == 0 and code.stdout.strip() == services.identity.confirmation_code(
        "pending@example.com"
    )
    assert conflicts.returncode == 0 and conflicts.stdout.strip() == "[]"
    assert seeded.returncode == 0 and f"seeded {EU}: 56 book(s) written" in seeded.stdout


def test_a_command_says_who_owns_the_directory_when_its_owner_does_not_answer(tmp_path: Path) -> None:
    topology, topo_file = isolated_topology(tmp_path / "topology.toml", (EU,))
    data = tmp_path / "data"
    deployment_secret(data)
    owner = own(data / EU, "region eu-west-1")
    try:
        done = bookstore("seed", "--data-dir", str(data), "--topology", str(topo_file), check=False)
    finally:
        owner.release()
    assert done.returncode == 1
    assert f"eu-west-1 does not answer at {topology.home.api_url}" in done.stderr
    assert f"{data / EU} is in use by region eu-west-1 (pid {os.getpid()})" in done.stderr
    assert "Traceback" not in done.stderr


def test_a_second_region_process_on_an_owned_directory_refuses_clearly(tmp_path: Path) -> None:
    _, topo_file = isolated_topology(tmp_path / "topology.toml", (EU,))
    data = tmp_path / "data"
    owner = own(data / EU, "region eu-west-1")
    try:
        # It waits OWNERSHIP_WAIT_S for a command to finish, then gives up with the owner's name.
        done = bookstore(
            "region",
            "serve",
            "--region",
            EU,
            "--data-dir",
            str(data),
            "--topology",
            str(topo_file),
            check=False,
        )
    finally:
        owner.release()
    assert done.returncode == 1
    assert f"{data / EU} is in use by region eu-west-1 (pid {os.getpid()})" in done.stderr
    assert "Traceback" not in done.stderr + done.stdout
