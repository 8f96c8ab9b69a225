"""`secrets export` and `secrets import`: one deployment's credentials carried to another host's data dir."""

from __future__ import annotations

import stat
from pathlib import Path

import pytest
from typer.testing import CliRunner

from bookstore.cli import app
from bookstore.runtime.secret import (
    CredentialsConflict,
    deployment_credentials,
    export_credentials,
    import_credentials,
    missing,
    parse_export,
)


@pytest.fixture(autouse=True)
def _no_overrides(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in ("BOOKSTORE_SECRET", "BOOKSTORE_OPERATOR_TOKEN", "BOOKSTORE_S3_ACCESS_KEY_ID"):
        monkeypatch.delenv(name, raising=False)


def test_an_import_gives_the_other_host_the_same_credentials_in_0600_files(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    exported = export_credentials(here)
    assert missing(there) == ["s3", "secret", "operator-token"]
    assert sorted(import_credentials(there, parse_export(exported))) == [
        "operator-token",
        "s3-credentials",
        "secret",
    ]
    assert deployment_credentials(there) == deployment_credentials(here)
    assert missing(there) == []
    for name in ("secret", "operator-token", "s3-credentials"):
        assert stat.S_IMODE((there / name).stat().st_mode) == 0o600
    # Again: nothing to write.
    assert import_credentials(there, parse_export(exported)) == []


def test_an_import_over_other_credentials_is_refused_unless_replace(tmp_path: Path) -> None:
    here, there = tmp_path / "here", tmp_path / "there"
    deployment_credentials(there)
    held = parse_export(export_credentials(here))
    with pytest.raises(CredentialsConflict, match="already holds other credentials"):
        import_credentials(there, held)
    assert deployment_credentials(there) != held
    import_credentials(there, held, replace=True)
    assert deployment_credentials(there) == held


@pytest.mark.parametrize(
    "text", ["not json", "{}", '{"format": "bookstore-credentials/1", "secret": "s", "operatorToken": ""}']
)
def test_anything_but_an_export_is_refused(text: str) -> None:
    with pytest.raises(ValueError, match="credentials export"):
        parse_export(text)


def test_the_commands_round_trip_and_the_file_is_0600(tmp_path: Path) -> None:
    runner = CliRunner()
    target = tmp_path / "credentials.json"
    written = runner.invoke(app, ["secrets", "export", str(target), "--data-dir", str(tmp_path / "a")])
    assert written.exit_code == 0, written.output
    assert stat.S_IMODE(target.stat().st_mode) == 0o600
    again = runner.invoke(app, ["secrets", "export", str(target), "--data-dir", str(tmp_path / "a")])
    assert again.exit_code == 2 and "exists" in again.output
    imported = runner.invoke(app, ["secrets", "import", str(target), "--data-dir", str(tmp_path / "b")])
    assert imported.exit_code == 0, imported.output
    assert deployment_credentials(tmp_path / "b") == deployment_credentials(tmp_path / "a")
