"""Programs some tests need: outside CI a missing one skips the test with the reason, in CI it fails it."""

from __future__ import annotations

import os
import shutil
import subprocess
import uuid

import pytest

# Debian installs server daemons in sbin, which is not on every user's PATH.
SBIN_DIRS = ("/usr/local/sbin", "/usr/sbin", "/sbin")
INSTALL_HINTS = {
    "chromium": "apt-get install -y chromium",
    "redis-server": "apt-get install -y redis-server",
    "mariadbd": "apt-get install -y mariadb-server",
    "mariadb-install-db": "apt-get install -y mariadb-server",
    "dig": "apt-get install -y bind9-dnsutils",
    "jq": "apt-get install -y jq",
    "curl": "apt-get install -y curl",
    "ip": "apt-get install -y iproute2",
}


def in_ci() -> bool:
    """True when the run is CI's (`CI=true`), where every test must run."""
    return os.environ.get("CI", "").strip().lower() == "true"


def find_binary(*names: str) -> str | None:
    """The path of the first of `names` found on PATH or in the sbin directories, else None."""
    search = os.pathsep.join([os.environ.get("PATH", os.defpath), *SBIN_DIRS])
    for name in names:
        found = shutil.which(name, path=search)
        if found:
            return found
    return None


def require_binary(name: str, *alternatives: str) -> str:
    """The path of `name` (or of the first alternative found, e.g. mysqld for mariadbd).

    Missing: skips the calling test with the reason and how to install it; with `CI=true` fails it
    instead, so CI never reports green for tests it did not run.
    """
    found = find_binary(name, *alternatives)
    if found is not None:
        return found
    hint = INSTALL_HINTS.get(name, f"install {name}")
    _unavailable(f"{name} is not installed ({hint})")
    raise AssertionError("unreachable: _unavailable skips or fails")


def _unavailable(reason: str) -> None:
    """Skip with `reason` outside CI; fail with it in CI."""
    if in_ci():
        pytest.fail(f"{reason}; CI=true requires every test to run", pytrace=False)
    pytest.skip(reason)


def require_netns() -> str:
    """The path of `ip`, once a network namespace could be made and removed here (root, or CAP_SYS_ADMIN).

    Not permitted: skips the calling test with the reason outside CI, fails it in CI.
    """
    ip = require_binary("ip")
    probe = f"bkprobe{os.getpid()}-{uuid.uuid4().hex[:6]}"
    made = subprocess.run([ip, "netns", "add", probe], capture_output=True, text=True, check=False)
    if made.returncode != 0:
        _unavailable(f"`ip netns add` is not permitted here ({made.stderr.strip() or 'no reason given'})")
    subprocess.run([ip, "netns", "delete", probe], capture_output=True, check=False)
    return ip
