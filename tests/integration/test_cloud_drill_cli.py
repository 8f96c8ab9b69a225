"""`bookstore aws drill` from the CLI without AWS: its help, and its clear refusals without credentials,
without --domain, and against an account where nothing is deployed (moto's server on 127.0.0.1)."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from moto.server import ThreadedMotoServer
from typer.testing import CliRunner

from bookstore.cli import app
from tests.support.aws import fake_credentials

ZONE = "Z0123456789ABCDEFGHIJ"
DOMAIN = "bookstore.example.com"
ARGS = ["aws", "drill", "--domain", DOMAIN, "--hosted-zone-id", ZONE]


def test_the_drill_command_has_help_with_json() -> None:
    listed = CliRunner().invoke(app, ["aws", "--help"])
    assert listed.exit_code == 0 and "drill" in listed.stdout
    helped = CliRunner().invoke(app, ["aws", "drill", "--help"])
    assert helped.exit_code == 0
    for option in ("--json", "--domain", "--hosted-zone-id", "--duration", "--repair"):
        assert option in helped.stdout, option


def test_without_a_domain_it_refuses(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    fake_credentials(tmp_path, monkeypatch)
    refused = CliRunner().invoke(app, ["aws", "drill", "--hosted-zone-id", ZONE])
    assert refused.exit_code == 2 and "--domain" in refused.output


def test_without_credentials_it_refuses_before_asking_aws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake_credentials(tmp_path, monkeypatch, AWS_EC2_METADATA_DISABLED="true")
    for name in ("AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_SESSION_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    # No container credentials either: nothing that would send a request for them.
    for name in ("AWS_CONTAINER_CREDENTIALS_FULL_URI", "AWS_CONTAINER_CREDENTIALS_RELATIVE_URI"):
        monkeypatch.delenv(name, raising=False)
    refused = CliRunner().invoke(app, [*ARGS, "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2, refused.output
    assert "no AWS credentials" in refused.output


@pytest.fixture
def moto_url(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0)
    server.start()
    host, port = server.get_host_and_port()
    url = f"http://{host}:{port}"
    fake_credentials(tmp_path, monkeypatch, AWS_ENDPOINT_URL=url, AWS_EC2_METADATA_DISABLED="true")
    try:
        yield url
    finally:
        server.stop()


@pytest.mark.parametrize("more", [[], ["--repair"]])
def test_where_nothing_is_deployed_it_says_so(moto_url: str, tmp_path: Path, more: list[str]) -> None:
    refused = CliRunner().invoke(app, [*ARGS, *more, "--json", "--data-dir", str(tmp_path)])
    assert refused.exit_code == 2, refused.output
    assert "no API function in bookstore-region in eu-west-1" in refused.output
    assert "is it deployed?" in refused.output
