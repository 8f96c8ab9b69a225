"""A feature whose extra is not installed says which extra to install, never an ImportError traceback."""

from __future__ import annotations

import sys
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bookstore.cli import app
from bookstore.config import Storage, Topology
from bookstore.extras import MissingExtra, check_topology, require
from bookstore.region.compose import build_region


@pytest.fixture
def without_redis(monkeypatch: pytest.MonkeyPatch) -> None:
    """As if the [redis] extra were not installed: importing redis fails as a missing package does."""
    for name in [m for m in sys.modules if m == "redis" or m.startswith("redis.")]:
        monkeypatch.delitem(sys.modules, name)
    monkeypatch.setitem(sys.modules, "redis", None)


def test_require_names_the_extra(without_redis: None) -> None:
    with pytest.raises(MissingExtra) as missing:
        require("redis", '[storage] ranking = "redis"')
    assert missing.value.extra == "redis"
    assert '[storage] ranking = "redis" needs the [redis] extra' in missing.value.message
    assert "pip install 'bookstore[redis]'" in missing.value.message


def test_require_returns_an_installed_package() -> None:
    assert require("json", "anything").__name__ == "json"


def test_the_region_on_redis_without_the_extra_says_so(tmp_path: Path, without_redis: None) -> None:
    topology = Topology(storage=Storage(ranking="redis"))
    with pytest.raises(MissingExtra, match=r"needs the \[redis\] extra"):
        check_topology(topology)
    with pytest.raises(MissingExtra, match=r"needs the \[redis\] extra"):
        build_region(topology, "eu-west-1", tmp_path)


def test_up_refuses_at_once_naming_the_extra(tmp_path: Path, without_redis: None) -> None:
    topology = tmp_path / "topology.toml"
    topology.write_text('[storage]\nranking = "redis"\n')
    result = CliRunner().invoke(
        app, ["up", "--topology", str(topology), "--data-dir", str(tmp_path / "data")]
    )
    assert isinstance(result.exception, MissingExtra)  # main() prints it; CliRunner runs the app itself
    assert "pip install 'bookstore[redis]'" in str(result.exception)


def test_main_prints_the_missing_extra_and_exits_2(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], without_redis: None, tmp_path: Path
) -> None:
    from bookstore.cli import main

    topology = tmp_path / "topology.toml"
    topology.write_text('[storage]\nranking = "redis"\n')
    monkeypatch.setattr(
        sys, "argv", ["bookstore", "up", "--topology", str(topology), "--data-dir", str(tmp_path)]
    )
    with pytest.raises(SystemExit) as ended:
        main()
    assert ended.value.code == 2
    err = capsys.readouterr().err
    assert 'error: [storage] ranking = "redis" needs the [redis] extra (redis is not installed)' in err
    assert "Traceback" not in err


def test_aws_env_says_when_the_aws_cli_is_not_installed(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    import shutil

    from bookstore.runtime.secret import S3_ID_ENV, S3_KEY_ENV

    monkeypatch.setenv(S3_ID_ENV, "AKIDEXAMPLE")
    monkeypatch.setenv(S3_KEY_ENV, "a-secret")
    monkeypatch.setattr(shutil, "which", lambda name: None)
    result = CliRunner().invoke(app, ["aws-env", "--data-dir", str(tmp_path)])
    assert result.exit_code == 0, result.output
    assert "export AWS_ACCESS_KEY_ID=AKIDEXAMPLE" in result.stdout
    assert "note: the aws CLI is not installed: pip install awscli" in result.stderr
