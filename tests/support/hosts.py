"""Separate hosts on one machine: a network namespace per host, joined by veth pairs to a bridge namespace.

Every address lives inside namespaces the fixture made (10.231.0.0/24 on the bridge), so no traffic
reaches the machine's own interfaces; removing the namespaces removes their interfaces with them.
"""

from __future__ import annotations

import ctypes
import os
import re
import signal
import subprocess
import sys
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import TypeVar

from bookstore.supervisor.children import die_with_parent

T = TypeVar("T")
SUBNET = "10.231.0"
CLONE_NEWNET = 0x40000000


@dataclass
class Hosts:
    """Namespaces by host name (`ns`), their addresses (`address`) and what runs in them."""

    ip: str
    prefix: str
    address: dict[str, str]
    processes: list[subprocess.Popen[bytes]] = field(default_factory=list)
    _threads: dict[str, ThreadPoolExecutor] = field(default_factory=dict)

    def ns(self, host: str) -> str:
        return f"{self.prefix}-{host}"

    def command(self, host: str, *cmd: str) -> list[str]:
        """`cmd` as run on `host` (inside its namespace)."""
        return [self.ip, "netns", "exec", self.ns(host), *cmd]

    def bookstore(
        self, host: str, *args: str, check: bool = True, timeout: float = 120
    ) -> subprocess.CompletedProcess[str]:
        """`bookstore ARGS` on `host`, as its operator would run it there."""
        cmd = self.command(host, sys.executable, "-m", "bookstore", *args)
        done = subprocess.run(cmd, capture_output=True, text=True, check=False, timeout=timeout)
        if check and done.returncode != 0:
            raise AssertionError(f"bookstore {' '.join(args)} on {host}: {done.returncode}\n{done.stderr}")
        return done

    def bookstore_into(self, host: str, path: Path, *args: str) -> None:
        """`bookstore ARGS > PATH` on `host`: a shell's redirection, PATH made with the umask's mode."""
        cmd = self.command(host, sys.executable, "-m", "bookstore", *args)
        with path.open("wb") as out:
            done = subprocess.run(cmd, stdout=out, stderr=subprocess.PIPE, check=False, timeout=120)
        if done.returncode != 0:
            raise AssertionError(
                f"bookstore {' '.join(args)} on {host}: {done.stderr.decode(errors='replace')}"
            )

    def start(self, host: str, args: list[str], log: Path) -> subprocess.Popen[bytes]:
        """A long-running `bookstore ARGS` on `host` (its output in `log`); stopped when the hosts go."""
        cmd = self.command(host, sys.executable, "-m", "bookstore", *args)
        with log.open("ab") as out:
            # `ip netns exec` execs the command itself: the pid is the bookstore process's.
            process = subprocess.Popen(cmd, stdout=out, stderr=subprocess.STDOUT, preexec_fn=die_with_parent)
        self.processes.append(process)
        return process

    @contextmanager
    def entered(self, host: str) -> Iterator[None]:
        """The calling thread on `host` until the block ends: the sockets it opens, the threads and the
        processes it starts are that host's (as an operator's shell there); back where it was after."""
        back = os.open("/proc/thread-self/ns/net", os.O_RDONLY)
        try:
            _enter(self.ns(host))
            try:
                yield
            finally:
                _setns(back, "the namespace the thread came from")
        finally:
            os.close(back)

    def cut(self, a: str, b: str) -> None:
        """Nothing crosses between hosts `a` and `b` (either way) until `heal`: a blackhole route on each
        side, so connecting fails and an open connection's packets are dropped where they are sent."""
        for here, there in ((a, b), (b, a)):
            _run(self.ip, "-n", self.ns(here), "route", "replace", "blackhole", f"{self.address[there]}/32")

    def heal(self, a: str, b: str) -> None:
        for here, there in ((a, b), (b, a)):
            _run(self.ip, "-n", self.ns(here), "route", "del", "blackhole", f"{self.address[there]}/32")

    def cut_pairs(self) -> set[tuple[str, str]]:
        """The (host, other host) pairs whose traffic `cut` blackholes, as each host's routes say."""
        found = set()
        for here in self.address:
            shown = subprocess.run(
                [self.ip, "-n", self.ns(here), "route", "show", "type", "blackhole"],
                capture_output=True, text=True, check=True,
            ).stdout  # fmt: skip
            for there, address in self.address.items():
                if re.search(rf"^blackhole {re.escape(address)}\b", shown, re.MULTILINE):
                    found.add((here, there))
        return found

    def inside(self, host: str, call: Callable[[], T]) -> T:
        """`call()` in a thread that lives in `host`'s namespace: its sockets are that host's."""
        if host not in self._threads:
            self._threads[host] = ThreadPoolExecutor(1, initializer=_enter, initargs=(self.ns(host),))
        return self._threads[host].submit(call).result()

    def close(self) -> None:
        for process in self.processes:
            stop(process)
        for pool in self._threads.values():
            pool.shutdown(wait=True)


def stop(process: subprocess.Popen[bytes], grace_s: float = 10.0) -> None:
    """SIGTERM, then SIGKILL after `grace_s`; waits either way."""
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        try:
            process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


def _enter(ns: str) -> None:
    fd = os.open(f"/run/netns/{ns}", os.O_RDONLY)
    try:
        _setns(fd, ns)
    finally:
        os.close(fd)


def _setns(fd: int, what: str) -> None:
    # setns(2) moves only the calling thread; Python 3.11 has no os.setns, so through libc.
    libc = ctypes.CDLL(None, use_errno=True)
    if libc.setns(fd, CLONE_NEWNET) != 0:
        errno = ctypes.get_errno()
        raise OSError(errno, f"setns into {what}: {os.strerror(errno)}")


def _run(ip: str, *args: str) -> None:
    done = subprocess.run([ip, *args], capture_output=True, text=True, check=False)
    if done.returncode != 0:
        raise RuntimeError(f"ip {' '.join(args)}: {done.stderr.strip()}")


@contextmanager
def separate_hosts(ip: str, hosts: Mapping[str, int]) -> Iterator[Hosts]:
    """A namespace per host (name -> last octet of its address on 10.231.0.0/24) on one bridge.

    Everything made is removed on exit, whatever happened: the processes started, then the namespaces.
    """
    _remove_orphans(ip)
    prefix = f"bk{os.getpid()}"
    made: list[str] = []
    net = f"{prefix}-net"
    result = Hosts(ip, prefix, {name: f"{SUBNET}.{octet}" for name, octet in hosts.items()})
    try:
        _run(ip, "netns", "add", net)
        made.append(net)
        _run(ip, "-n", net, "link", "set", "lo", "up")
        _run(ip, "-n", net, "link", "add", "br0", "type", "bridge")
        _run(ip, "-n", net, "link", "set", "br0", "up")
        for index, (name, address) in enumerate(result.address.items()):
            ns = result.ns(name)
            _run(ip, "netns", "add", ns)
            made.append(ns)
            _run(ip, "-n", ns, "link", "set", "lo", "up")
            # Interface names are per namespace: each host's end is eth0, the bridge's end v<index>.
            _run(
                ip, "-n", net, "link", "add", f"v{index}", "type", "veth", "peer", "name", "eth0", "netns", ns
            )
            _run(ip, "-n", net, "link", "set", f"v{index}", "master", "br0", "up")
            _run(ip, "-n", ns, "addr", "add", f"{address}/24", "dev", "eth0")
            _run(ip, "-n", ns, "link", "set", "eth0", "up")
        yield result
    finally:
        result.close()
        for ns in reversed(made):
            subprocess.run([ip, "netns", "delete", ns], capture_output=True, check=False)


def _remove_orphans(ip: str) -> None:
    """Removes the namespaces of an earlier run that was killed before its cleanup (its pid is gone)."""
    listed = subprocess.run([ip, "netns", "list"], capture_output=True, text=True, check=False).stdout
    for line in listed.splitlines():
        found = re.match(r"(bk(\d+)-\S+)", line)
        if found and not Path(f"/proc/{found.group(2)}").exists():
            subprocess.run([ip, "netns", "delete", found.group(1)], capture_output=True, check=False)


def tail(path: Path, lines: int = 40) -> str:
    try:
        return "\n".join(path.read_text(errors="replace").splitlines()[-lines:])
    except OSError:
        return ""
