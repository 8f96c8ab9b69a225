"""Real MariaDB servers for tests: run from the installed mariadbd on free loopback ports, stopped after."""

from __future__ import annotations

import atexit
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import threading
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import pymysql
import pytest

from tests.support.prerequisites import find_binary, require_binary

HOST = "127.0.0.1"
START_TIMEOUT_S = 60.0
STOP_TIMEOUT_S = 30.0
USER = "root"
PASSWORD = ""
# Settings for quick tests: a small buffer pool, and the redo log written at each commit but flushed to
# disk once a second (a killed server loses nothing; only an OS crash could lose the last second).
FAST_ARGS = (
    "--innodb-buffer-pool-size=32M",
    "--innodb-log-file-size=16M",
    "--innodb-flush-log-at-trx-commit=2",
    "--skip-name-resolve",
    "--character-set-server=utf8mb4",
    "--collation-server=utf8mb4_bin",
)

_template_lock = threading.Lock()
_template: Path | None = None


def mariadbd_binary() -> str | None:
    return find_binary("mariadbd", "mysqld")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind((HOST, 0))
        port: int = s.getsockname()[1]
        return port


def _as_root() -> list[str]:
    # mariadbd refuses to run as root unless told to.
    return ["--user=root"] if os.geteuid() == 0 else []


def _template_datadir() -> Path:
    """An initialised, never started data directory, made once per process and copied for each server."""
    global _template
    with _template_lock:
        if _template is not None:
            return _template
        installer = require_binary("mariadb-install-db", "mysql_install_db")
        root = Path(tempfile.mkdtemp(prefix="mdb-template-"))
        atexit.register(shutil.rmtree, root, True)
        datadir = root / "data"
        # Its own directory for temporary tables: in the shared /tmp, another process's clean-up deleted
        # the installer's temporary files under load (CI: "Error on delete of '/tmp/#sql-temptable-...'").
        (root / "tmp").mkdir()
        result = subprocess.run(
            [
                installer,
                "--no-defaults",
                f"--datadir={datadir}",
                "--auth-root-authentication-method=normal",
                "--skip-test-db",
                "--skip-name-resolve",
                f"--tmpdir={root / 'tmp'}",
                *_as_root(),
            ],
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
            check=False,
        )
        if result.returncode != 0:
            raise RuntimeError(f"{installer} failed ({result.returncode}):\n{result.stdout.decode()[-3000:]}")
        _template = datadir
        return datadir


@dataclass
class MariaDBServer:
    """One mariadbd process with its own data directory, socket and loopback port.

    `stop()` shuts it down cleanly, `kill()` sends SIGKILL, `start()` starts it again on the same port
    and data directory (a restart after a crash included), so system tests can fail a server over.
    """

    server_id: int
    datadir: Path
    socket: str
    port: int
    extra_args: tuple[str, ...] = ()
    host: str = HOST
    user: str = USER
    password: str = PASSWORD
    log_path: Path = field(init=False)
    _proc: subprocess.Popen[bytes] | None = field(default=None, init=False, repr=False)

    def __post_init__(self) -> None:
        self.log_path = self.datadir.parent / "error.log"

    @property
    def pid(self) -> int | None:
        return None if self._proc is None else self._proc.pid

    def args(self) -> list[str]:
        binary = mariadbd_binary()
        assert binary is not None
        return [
            binary,
            "--no-defaults",
            f"--datadir={self.datadir}",
            f"--port={self.port}",
            f"--bind-address={self.host}",
            f"--socket={self.socket}",
            f"--pid-file={self.datadir.parent / 'mariadbd.pid'}",
            f"--log-error={self.log_path}",
            f"--server-id={self.server_id}",
            f"--tmpdir={self.datadir.parent}",  # not the shared /tmp, as for the installer
            *_as_root(),
            *FAST_ARGS,
            *self.extra_args,
        ]

    def connect(self, database: str | None = None, **kwargs: Any) -> pymysql.connections.Connection[Any]:
        """An administrative connection (root, autocommit) to this server."""
        return pymysql.connect(
            host=self.host,
            port=self.port,
            user=self.user,
            password=self.password,
            database=database,
            autocommit=True,
            charset="utf8mb4",
            connect_timeout=2,
            **kwargs,
        )

    def start(self) -> None:
        if self._proc is not None and self._proc.poll() is None:
            return
        with open(self.log_path, "ab") as log:
            self._proc = subprocess.Popen(self.args(), stdout=log, stderr=subprocess.STDOUT)
        deadline = time.monotonic() + START_TIMEOUT_S
        while time.monotonic() < deadline:
            if self._proc.poll() is not None:
                raise RuntimeError(f"mariadbd exited with {self._proc.returncode}:\n{self.log_tail()}")
            try:
                self.connect().close()
                return
            except pymysql.err.MySQLError:
                time.sleep(0.1)
        self.kill()
        raise RuntimeError(f"mariadbd did not accept connections in {START_TIMEOUT_S}s:\n{self.log_tail()}")

    def stop(self) -> None:
        """A clean shutdown (SIGTERM, then SIGKILL if it takes longer than STOP_TIMEOUT_S)."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=STOP_TIMEOUT_S)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait(timeout=10)

    def kill(self) -> None:
        """SIGKILL: the server dies as in a crash; `start()` recovers it from its data directory."""
        proc = self._proc
        if proc is None or proc.poll() is not None:
            return
        proc.kill()
        proc.wait(timeout=10)

    def running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def log_tail(self, chars: int = 3000) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-chars:]
        except OSError:
            return "(no error log)"


def _port_taken(server: MariaDBServer) -> bool:
    return "Address already in use" in server.log_tail(20_000) or "Can't start server: Bind" in (
        server.log_tail(20_000)
    )


@contextmanager
def mariadb_server(
    server_id: int = 1,
    extra_args: Sequence[str] = (),
    *,
    log_bin: bool = False,
    gtid_strict_mode: bool = False,
) -> Iterator[MariaDBServer]:
    """Start a MariaDB server on a free loopback port with a fresh data directory; stop it on exit.

    `log_bin` adds `--log-bin` (binary log named after the server id), `gtid_strict_mode` adds
    `--gtid-strict-mode=1`; anything else goes in `extra_args` (e.g. `--read-only=1`). Root has no password
    and may connect over TCP from 127.0.0.1. Without mariadbd: skips the calling test, fails it in CI.
    """
    require_binary("mariadbd", "mysqld")
    template = _template_datadir()
    args = list(extra_args)
    if log_bin:
        args.append(f"--log-bin=mariadb-bin-{server_id}")
    if gtid_strict_mode:
        args.append("--gtid-strict-mode=1")
    root = Path(tempfile.mkdtemp(prefix=f"mdb{server_id}-"))
    try:
        datadir = root / "data"
        shutil.copytree(template, datadir)
        # Another process may take the port between our probe and mariadbd binding it: try a few ports.
        for _attempt in range(5):
            server = MariaDBServer(
                server_id=server_id,
                datadir=datadir,
                socket=str(root / "mariadbd.sock"),
                port=free_port(),
                extra_args=tuple(args),
            )
            try:
                server.start()
            except RuntimeError:
                if _port_taken(server):
                    server.log_path.unlink(missing_ok=True)
                    continue
                raise
            try:
                yield server
            finally:
                server.stop()
            return
        raise RuntimeError("mariadbd could not bind a free loopback port after 5 attempts")
    finally:
        shutil.rmtree(root, ignore_errors=True)


def mariadb_server_fixture(
    scope: Literal["session", "package", "module", "class", "function"] = "session",
    server_id: int = 1,
    extra_args: Sequence[str] = (),
    **kwargs: bool,
) -> Any:
    """A pytest fixture (default session-scoped) yielding a running MariaDBServer.

    Use as `mariadb = mariadb_server_fixture()` at module level of a test file or a conftest.py.
    """

    @pytest.fixture(scope=scope)
    def _fixture() -> Iterator[MariaDBServer]:
        with mariadb_server(server_id, extra_args, **kwargs) as server:
            yield server

    return _fixture
