"""The SigningKeyStore contract, proven against every adapter: key files (local disk), Secrets Manager
(moto) and memory.

Durability and sharing between processes are the key files' own: a second store over the same
directory stands for a restart or another process; for Secrets Manager, a second client.
"""

from __future__ import annotations

import multiprocessing
import stat
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.asymmetric.rsa import generate_private_key
from moto import mock_aws

from bookstore.domain.errors import StorageError
from bookstore.ports import SigningKeyStore
from bookstore.storage.local.keys import KeyFiles
from bookstore.storage.memory.keys import MemoryKeys
from bookstore.storage.secretsmanager.keys import SecretsManagerKeys
from tests.support.aws import fake_credentials


def raw(key: Ed25519PrivateKey) -> bytes:
    return key.private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )


@pytest.fixture
def secrets(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[Callable[[], Any]]:
    """Secrets Manager clients of one (moto) account and region."""
    fake_credentials(tmp_path, monkeypatch)
    with mock_aws():
        yield lambda: boto3.client("secretsmanager", region_name="eu-west-1")


@pytest.fixture(params=["files", "secretsmanager", "memory"])
def make_store(request: pytest.FixtureRequest, tmp_path: Path) -> Callable[[], SigningKeyStore]:
    """Stores sharing what they hold: each call is another view of the same keys."""
    if request.param == "files":
        return lambda: KeyFiles(tmp_path / "keys")
    if request.param == "secretsmanager":
        client_of: Callable[[], Any] = request.getfixturevalue("secrets")
        return lambda: SecretsManagerKeys(client_of())
    shared = MemoryKeys()
    return lambda: shared


def test_a_key_is_made_once_and_returned_ever_after(make_store: Callable[[], SigningKeyStore]) -> None:
    store = make_store()
    first = store.load_or_create("eu-west-1-1")
    assert isinstance(first, Ed25519PrivateKey)
    assert raw(store.load_or_create("eu-west-1-1")) == raw(first)
    assert raw(make_store().load_or_create("eu-west-1-1")) == raw(first)


def test_keys_of_different_kids_differ(make_store: Callable[[], SigningKeyStore]) -> None:
    store = make_store()
    assert raw(store.load_or_create("eu-west-1-1")) != raw(store.load_or_create("ap-southeast-1-1"))


def test_key_files_are_private_and_leave_nothing_else(tmp_path: Path) -> None:
    KeyFiles(tmp_path / "keys").load_or_create("eu-west-1-1")
    (path,) = (tmp_path / "keys").iterdir()
    assert path.name == "eu-west-1-1.pem"  # no temporary file left behind
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700


def _load(key_dir: str) -> bytes:
    return raw(KeyFiles(Path(key_dir)).load_or_create("eu-west-1-1"))


def test_processes_racing_on_a_first_start_get_the_key_stored_first(tmp_path: Path) -> None:
    with multiprocessing.get_context("spawn").Pool(4) as pool:
        keys = pool.map(_load, [str(tmp_path / "keys")] * 8)
    assert len(set(keys)) == 1 and keys[0] == _load(str(tmp_path / "keys"))


@pytest.mark.parametrize("content", ["not a key", "rsa"])
def test_a_stored_key_that_is_not_ed25519_is_a_storage_error_and_stays(tmp_path: Path, content: str) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    path = key_dir / "eu-west-1-1.pem"
    data = (
        b"not a key"
        if content == "not a key"
        else generate_private_key(65537, 2048).private_bytes(
            serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
        )
    )
    path.write_bytes(data)
    with pytest.raises(StorageError, match=r"eu-west-1-1\.pem"):
        KeyFiles(key_dir).load_or_create("eu-west-1-1")
    assert path.read_bytes() == data


def test_an_unwritable_directory_is_a_storage_error(tmp_path: Path) -> None:
    (tmp_path / "keys").write_text("a file where the directory should be")
    with pytest.raises(StorageError, match="cannot read or create the signing key"):
        KeyFiles(tmp_path / "keys").load_or_create("eu-west-1-1")


def test_two_instances_creating_the_first_key_at_once_both_get_the_stored_one(
    secrets: Callable[[], Any],
) -> None:
    """The loser of the race (CreateSecret: ResourceExistsException) returns the winner's key."""
    winner = SecretsManagerKeys(secrets())
    loser_client = secrets()
    real_get = loser_client.get_secret_value
    calls = 0

    def first_read_misses(**kwargs: Any) -> Any:
        nonlocal calls
        calls += 1
        if calls == 1:
            # The loser looked before the winner stored its key...
            key = winner.load_or_create("eu-west-1-1")
            assert key is not None
            raise loser_client.exceptions.ResourceNotFoundException(
                {"Error": {"Code": "ResourceNotFoundException", "Message": "not yet"}}, "GetSecretValue"
            )
        return real_get(**kwargs)

    loser_client.get_secret_value = first_read_misses
    loser = SecretsManagerKeys(loser_client).load_or_create("eu-west-1-1")
    assert raw(loser) == raw(winner.load_or_create("eu-west-1-1"))


def test_a_secret_that_is_not_an_ed25519_key_is_a_storage_error_and_stays(secrets: Callable[[], Any]) -> None:
    client = secrets()
    client.create_secret(Name="bookstore/signing/eu-west-1-1", SecretString="not a key")
    with pytest.raises(StorageError, match="bookstore/signing/eu-west-1-1"):
        SecretsManagerKeys(client).load_or_create("eu-west-1-1")
    assert client.get_secret_value(SecretId="bookstore/signing/eu-west-1-1")["SecretString"] == "not a key"
