"""The prerequisites helper: a missing program skips outside CI and fails in CI; a present one is found."""

from __future__ import annotations

import stat
import subprocess
from pathlib import Path

import pytest

from tests.support import prerequisites
from tests.support.prerequisites import find_binary, require_binary


@pytest.fixture
def bare_path(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """PATH holding only an empty directory of ours, and no sbin fallback."""
    monkeypatch.setenv("PATH", str(tmp_path))
    monkeypatch.setattr(prerequisites, "SBIN_DIRS", ())
    return tmp_path


def _install(directory: Path, name: str) -> Path:
    program = directory / name
    program.write_text("#!/bin/sh\nexit 0\n")
    program.chmod(program.stat().st_mode | stat.S_IXUSR)
    return program


def test_a_missing_binary_skips_with_the_reason_outside_ci(
    bare_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=r"redis-server is not installed \(apt-get install -y redis-server\)"
    ):
        require_binary("redis-server")


def test_a_missing_binary_fails_in_ci(bare_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match=r"chromium is not installed.*CI=true"):
        require_binary("chromium")


def test_ci_set_to_anything_but_true_still_skips(bare_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "false")
    with pytest.raises(pytest.skip.Exception):
        require_binary("mariadbd")


def test_a_present_binary_is_returned_in_and_out_of_ci(
    bare_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    program = _install(bare_path, "redis-server")
    for ci in ("true", ""):
        monkeypatch.setenv("CI", ci)
        assert require_binary("redis-server") == str(program)


def test_an_alternative_name_is_accepted(bare_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("CI", "true")
    program = _install(bare_path, "mysqld")
    assert require_binary("mariadbd", "mysqld") == str(program)


def test_sbin_directories_are_searched_off_path(
    tmp_path: Path, bare_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    sbin = tmp_path / "sbin"
    sbin.mkdir()
    program = _install(sbin, "mariadbd")
    monkeypatch.setattr(prerequisites, "SBIN_DIRS", (str(sbin),))
    assert find_binary("mariadbd") == str(program)


def test_a_file_that_is_not_executable_does_not_count(
    bare_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("CI", "true")
    (bare_path / "chromium").write_text("not a program")
    with pytest.raises(pytest.fail.Exception):
        require_binary("chromium")


def _ip_refusing(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(prerequisites, "require_binary", lambda name: "/usr/sbin/ip")

    def refuse(cmd: list[str], **_: object) -> subprocess.CompletedProcess[str]:
        return subprocess.CompletedProcess(
            cmd, 1, "", "mount --make-shared /run/netns failed: Operation not permitted"
        )

    monkeypatch.setattr(subprocess, "run", refuse)


def test_network_namespaces_not_permitted_skip_with_the_reason_outside_ci(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    _ip_refusing(monkeypatch)
    monkeypatch.delenv("CI", raising=False)
    with pytest.raises(
        pytest.skip.Exception, match=r"`ip netns add` is not permitted here \(.*Operation not permitted"
    ):
        prerequisites.require_netns()


def test_network_namespaces_not_permitted_fail_in_ci(monkeypatch: pytest.MonkeyPatch) -> None:
    _ip_refusing(monkeypatch)
    monkeypatch.setenv("CI", "true")
    with pytest.raises(pytest.fail.Exception, match="CI=true requires every test to run"):
        prerequisites.require_netns()
