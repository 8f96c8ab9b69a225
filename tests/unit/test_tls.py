"""TLS between hosts: the [tls] section, the CA and host certificates, and who the clients refuse."""

from __future__ import annotations

import asyncio
import ssl
import stat
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import httpx
import pytest
from cryptography import x509
from cryptography.hazmat.primitives.serialization import Encoding
from pydantic import ValidationError
from typer.testing import CliRunner

from bookstore.cli import app
from bookstore.config import DEFAULT_REGIONS, Topology, link_url
from bookstore.edge.upstream import Origin, UpstreamError
from bookstore.runtime.certificates import CertificateError, init_ca, issue
from bookstore.runtime.tls import TlsFiles, TlsMaterialError, client_context, tls_files, verify

EU, AP = "eu-west-1", "ap-southeast-1"
ANSWER = b"HTTP/1.1 200 OK\r\ncontent-length: 2\r\ncontent-type: text/plain\r\n\r\nok"


def tls_topology(**tls: object) -> Topology:
    return Topology.model_validate({"links": "direct", "supervised": False, "tls": {"enabled": True, **tls}})


def test_without_tls_every_url_is_plain_http() -> None:
    topology = Topology()
    assert topology.region(EU).api_url == "http://127.0.1.1:8000"
    assert link_url(topology, EU, AP) == "http://127.0.1.102:8000"


def test_with_tls_every_region_url_is_https_and_the_defaults_stay_plain() -> None:
    topology = tls_topology()
    assert topology.region(EU).api_url == "https://127.0.1.1:8000"
    assert topology.region(AP).s3_url == "https://127.0.2.1:9000"
    assert link_url(topology, EU, AP, 9000) == "https://127.0.2.1:9000"
    # The default regions are shared by every topology: one with TLS must not turn the others' on.
    assert DEFAULT_REGIONS[0].api_url == "http://127.0.1.1:8000"
    assert Topology().region(EU).api_url.startswith("http://")
    # A topology passed to a child as JSON keeps its scheme.
    assert Topology.model_validate_json(topology.model_dump_json()).region(EU).api_url.startswith("https://")


def test_tls_needs_direct_links(tmp_path: Path) -> None:
    with pytest.raises(ValidationError, match='links = "direct"'):
        Topology.model_validate({"supervised": False, "tls": {"enabled": True}})
    # `up` on one machine: nothing crosses a network, and one host certificate would serve every region.
    with pytest.raises(ValidationError, match="supervised = false"):
        Topology.model_validate({"links": "direct", "tls": {"enabled": True}})
    # From a file and from the environment, as an operator sets it.
    path = tmp_path / "topology.toml"
    path.write_text(
        'links = "direct"\nsupervised = false\n[tls]\nenabled = true\nca = "/etc/bookstore/ca.crt"\n'
    )
    loaded = Topology.load(path, environ={})
    assert loaded.tls.enabled and loaded.tls.ca == "/etc/bookstore/ca.crt"
    environ = {"BOOKSTORE_LINKS": "direct", "BOOKSTORE_SUPERVISED": "false", "BOOKSTORE_TLS__ENABLED": "true"}
    assert Topology.load(environ=environ).tls.enabled


def test_the_material_is_found_under_the_data_directory_or_missing_says_how_to_make_it(
    tmp_path: Path,
) -> None:
    assert tls_files(Topology(), tmp_path) is None
    assert verify(Topology(), tmp_path) is True
    with pytest.raises(TlsMaterialError, match="bookstore tls init"):
        tls_files(tls_topology(), tmp_path)
    init_ca(tmp_path / "tls")
    # A client needs the CA only; a server its certificate and key too.
    assert isinstance(client_context(tls_topology(), tmp_path), ssl.SSLContext)
    with pytest.raises(TlsMaterialError, match=r"host\.crt"):
        tls_files(tls_topology(), tmp_path)
    issue(tmp_path / "tls", tmp_path / "tls", names=(), addresses=("127.0.0.1",))
    files = tls_files(tls_topology(), tmp_path)
    assert files == TlsFiles(tmp_path / "tls/ca.crt", tmp_path / "tls/host.crt", tmp_path / "tls/host.key")
    # A key that is not the certificate's (issued again beside it) is said at start, not in a traceback.
    other = issue(tmp_path / "tls", tmp_path / "other", names=(), addresses=("127.0.0.1",))
    files.key.write_bytes(other.key.read_bytes())
    with pytest.raises(TlsMaterialError, match="cannot be used"):
        tls_files(tls_topology(), tmp_path)


def test_init_writes_the_ca_key_0600_and_refuses_to_replace_a_ca_silently(tmp_path: Path) -> None:
    ca = init_ca(tmp_path)
    assert stat.S_IMODE((tmp_path / "ca.key").stat().st_mode) == 0o600
    cert = x509.load_pem_x509_certificate(ca.read_bytes())
    assert cert.extensions.get_extension_for_class(x509.BasicConstraints).value.ca
    with pytest.raises(CertificateError, match="--replace"):
        init_ca(tmp_path)
    assert init_ca(tmp_path, replace=True).read_bytes() != cert.public_bytes(Encoding.PEM)


def test_issue_names_the_host_in_its_san_and_writes_its_key_0600(tmp_path: Path) -> None:
    init_ca(tmp_path / "ca")
    done = issue(tmp_path / "ca", tmp_path / "eu", names=("eu.example",), addresses=("10.0.0.1", "::1"))
    assert stat.S_IMODE(done.key.stat().st_mode) == 0o600
    san = x509.load_pem_x509_certificate(done.cert.read_bytes()).extensions.get_extension_for_class(
        x509.SubjectAlternativeName
    )
    assert san.value.get_values_for_type(x509.DNSName) == ["eu.example"]
    assert [str(a) for a in san.value.get_values_for_type(x509.IPAddress)] == ["10.0.0.1", "::1"]
    assert done.ca.read_bytes() == (tmp_path / "ca" / "ca.crt").read_bytes()
    with pytest.raises(CertificateError, match="--ip takes"):
        issue(tmp_path / "ca", tmp_path / "x", names=(), addresses=("10.0.0",))
    for bad in ("../etc", "a b", "-eu.example", "eu..example"):
        with pytest.raises(CertificateError, match="not a DNS name"):
            issue(tmp_path / "ca", tmp_path / "x", names=(bad,), addresses=())
    with pytest.raises(CertificateError, match="--host NAME"):
        issue(tmp_path / "ca", tmp_path / "x", names=(), addresses=())
    with pytest.raises(CertificateError, match="bookstore tls init"):
        issue(tmp_path / "none", tmp_path / "x", names=("a",), addresses=())


def test_the_tls_commands_make_the_material_and_refuse_clearly(tmp_path: Path) -> None:
    runner = CliRunner()
    data = str(tmp_path / "data")
    no_ca = runner.invoke(app, ["tls", "issue", "--ip", "10.0.0.1", "--data-dir", data])
    assert no_ca.exit_code == 2 and "bookstore tls init" in no_ca.output
    assert runner.invoke(app, ["tls", "init", "--data-dir", data]).exit_code == 0
    again = runner.invoke(app, ["tls", "init", "--data-dir", data])
    assert again.exit_code == 1 and "--replace" in again.output
    issued = runner.invoke(app, ["tls", "issue", "--host", "eu", "--ip", "10.0.0.1", "--data-dir", data])
    assert issued.exit_code == 0, issued.output
    host = tmp_path / "data/tls/hosts/eu"
    assert sorted(p.name for p in host.iterdir()) == ["ca.crt", "host.crt", "host.key"]
    assert stat.S_IMODE((host / "host.key").stat().st_mode) == 0o600


def _material(root: Path, *addresses: str) -> TlsFiles:
    """A CA in `root` and a certificate for `addresses` under it."""
    if not (root / "ca.crt").exists():
        init_ca(root)
    out = root / "-".join(addresses)
    done = issue(root, out, names=(), addresses=addresses)
    return TlsFiles(done.ca, done.cert, done.key)


@asynccontextmanager
async def serving(files: TlsFiles) -> AsyncIterator[int]:
    """A TLS server on 127.0.0.1 presenting `files`' certificate and answering every request 200 `ok`."""

    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            await reader.readuntil(b"\r\n\r\n")
            writer.write(ANSWER)
            await writer.drain()
        except (asyncio.IncompleteReadError, ConnectionError, ssl.SSLError):
            pass
        finally:
            writer.close()

    server = await asyncio.start_server(answer, "127.0.0.1", 0, ssl=files.server_context())
    async with server:
        yield server.sockets[0].getsockname()[1]


async def _edge_get(port: int, context: ssl.SSLContext | None) -> int:
    origin = Origin("127.0.0.1", port, tls=context, keep_alive=False)
    try:
        return (await origin.request("GET", b"/", [], timeout_s=5)).status
    finally:
        origin.close()


async def _httpx_get(port: int, context: ssl.SSLContext | bool) -> int:
    async with httpx.AsyncClient(verify=context) as client:
        return (await client.get(f"https://127.0.0.1:{port}/")).status_code


def test_clients_accept_their_ca_and_refuse_another_ca_another_name_and_plain_text(tmp_path: Path) -> None:
    ours = _material(tmp_path / "ours", "127.0.0.1")
    theirs = _material(tmp_path / "theirs", "127.0.0.1")
    # Signed by our CA, but for another address than the one connected to.
    misnamed = _material(tmp_path / "ours", "127.0.0.2")

    async def run() -> None:
        trusting = ours.client_context()
        async with serving(ours) as port:
            assert await _edge_get(port, trusting) == 200
            assert await _httpx_get(port, trusting) == 200
            # The edge's plain-text connection gets no answer from a TLS listener.
            with pytest.raises(UpstreamError):
                await _edge_get(port, None)
            with pytest.raises(httpx.HTTPError):
                async with httpx.AsyncClient() as client:
                    await client.get(f"http://127.0.0.1:{port}/")
        for files in (theirs, misnamed):
            async with serving(files) as port:
                with pytest.raises(UpstreamError, match="CERTIFICATE_VERIFY_FAILED"):
                    await _edge_get(port, trusting)
                with pytest.raises(httpx.ConnectError, match="CERTIFICATE_VERIFY_FAILED"):
                    await _httpx_get(port, trusting)

    asyncio.run(run())


def test_a_region_or_an_edge_without_its_material_refuses_to_start(tmp_path: Path) -> None:
    runner = CliRunner()
    topology = tmp_path / "hosts.toml"
    topology.write_text('links = "direct"\nsupervised = false\n[tls]\nenabled = true\n')
    data = tmp_path / "data"
    # The deployment's credentials are there (a host with none is refused before TLS is looked at).
    assert (
        runner.invoke(app, ["secrets", "export", str(tmp_path / "c.json"), "--data-dir", str(data)]).exit_code
        == 0
    )
    common = ["--topology", str(topology), "--data-dir", str(data)]
    for command in (["region", "serve", "--region", EU], ["edge", "serve"]):
        refused = runner.invoke(app, [*command, *common])
        assert refused.exit_code == 2, refused.output
        assert "ca.crt is missing" in refused.output and "bookstore tls init" in refused.output
    # With the CA alone the edge could start; a region still wants its own certificate and key.
    init_ca(data / "tls")
    refused = runner.invoke(app, ["region", "serve", "--region", EU, *common])
    assert refused.exit_code == 2 and "host.crt is missing" in refused.output
