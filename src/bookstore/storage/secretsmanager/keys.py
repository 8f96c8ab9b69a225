"""SecretsManagerKeys: the SigningKeyStore port as secrets (PKCS#8 PEM) named `<prefix><kid>`.

Every Lambda instance of a region signs with the region's one key; a disk of its own (/tmp) would give
each instance its own. The first of two instances racing to create it wins (CreateSecret refuses the
second with ResourceExistsException), and both return the key stored.
"""

from __future__ import annotations

import logging
from typing import Any

from botocore.exceptions import BotoCoreError, ClientError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bookstore.domain.errors import StorageError

log = logging.getLogger(__name__)


class SecretsManagerKeys:
    """Private signing keys as secrets `<prefix><kid>` in `client`'s region."""

    def __init__(self, client: Any, *, prefix: str = "bookstore/signing/") -> None:
        self._client = client
        self._prefix = prefix

    def name(self, kid: str) -> str:
        return f"{self._prefix}{kid}"

    def load_or_create(self, kid: str) -> Ed25519PrivateKey:
        name = self.name(kid)
        pem = self._read(name)
        if pem is None:
            created = Ed25519PrivateKey.generate().private_bytes(
                serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
            )
            try:
                self._client.create_secret(
                    Name=name,
                    SecretString=created.decode("ascii"),
                    Description=f"The Bookstore's private signing key {kid}",
                )
                log.info("event=signing_key_created secret=%s", name)
            except ClientError as exc:
                if _code(exc) != "ResourceExistsException":
                    raise StorageError(f"cannot create the signing key secret {name}: {exc}") from exc
            except BotoCoreError as exc:
                raise StorageError(f"cannot create the signing key secret {name}: {exc}") from exc
            # Read back, never the one made here: of two racing creators, the stored one is the key.
            pem = self._read(name)
            if pem is None:
                raise StorageError(f"the signing key secret {name} is not there after it was created")
        try:
            key = serialization.load_pem_private_key(pem.encode("ascii"), password=None)
        except (ValueError, UnicodeEncodeError) as exc:
            raise StorageError(f"the secret {name} does not hold a readable private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise StorageError(f"the secret {name} holds a {type(key).__name__}, not an Ed25519 private key")
        return key

    def _read(self, name: str) -> str | None:
        try:
            answer = self._client.get_secret_value(SecretId=name)
        except ClientError as exc:
            if _code(exc) == "ResourceNotFoundException":
                return None
            raise StorageError(f"cannot read the signing key secret {name}: {exc}") from exc
        except BotoCoreError as exc:
            raise StorageError(f"cannot read the signing key secret {name}: {exc}") from exc
        value = answer.get("SecretString")
        if not isinstance(value, str):
            raise StorageError(f"the secret {name} holds no text (SecretString)")
        return value


def _code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))
