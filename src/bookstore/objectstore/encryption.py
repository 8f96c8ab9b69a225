"""Server-side encryption in the S3 API: SSE-S3 (always), SSE-C keys and their proofs, SSE-KMS refused.

Every version written is encrypted at rest (S3 has encrypted every new object with SSE-S3 since 2023):
with the region's own key (SSE-S3, "AES256"), or with the customer's key given with the request
(SSE-C), which the store never keeps: it keeps a salted HMAC of it (`KeyProof`) to tell a right key
from a wrong one, and the key's MD5 (S3 returns it). How the bytes are encrypted is the adapter's
business (storage/local/encryption.py).
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import hmac
import secrets
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Literal

from bookstore.domain.errors import NotFound
from bookstore.objectstore.errors import (
    AccessDenied,
    InvalidArgument,
    InvalidRequest,
    NotImplementedS3,
    S3Error,
)

SSE_S3 = "AES256"
SSE_C = "SSE-C"
Mode = Literal["", "AES256", "SSE-C"]
CUSTOMER = "x-amz-server-side-encryption-customer-"
COPY_CUSTOMER = "x-amz-copy-source-server-side-encryption-customer-"


class ServerSideEncryptionConfigurationNotFoundError(NotFound, S3Error):
    code = "ServerSideEncryptionConfigurationNotFoundError"
    status = 404


@dataclass(frozen=True)
class CustomerKey:
    """An SSE-C key as a request gives it: 32 bytes, and the base64 MD5 S3 echoes."""

    key: bytes
    md5: str

    def __repr__(self) -> str:
        # Never in a log or a traceback.
        return f"CustomerKey(md5={self.md5!r})"


@dataclass(frozen=True)
class KeyProof:
    """What is stored of an SSE-C key: a random salt and HMAC-SHA256(salt, key), and the key's MD5."""

    salt: str
    mac: str
    md5: str

    @classmethod
    def of(cls, key: CustomerKey) -> KeyProof:
        salt = secrets.token_bytes(16)
        return cls(_b64(salt), _b64(hmac.digest(salt, key.key, "sha256")), key.md5)

    def to_json(self) -> dict[str, str]:
        return {"s": self.salt, "h": self.mac, "m": self.md5}

    @classmethod
    def from_json(cls, data: Mapping[str, str] | None) -> KeyProof | None:
        return None if not data else cls(data["s"], data["h"], data["m"])

    def check(self, key: CustomerKey | None) -> None:
        """Nothing when `key` is the one this proves; InvalidRequest without one, AccessDenied if wrong."""
        if key is None:
            raise InvalidRequest(
                "The object was stored using a form of Server Side Encryption. "
                "The correct parameters must be provided to retrieve the object."
            )
        mac = hmac.digest(base64.b64decode(self.salt), key.key, "sha256")
        if not hmac.compare_digest(mac, base64.b64decode(self.mac)):
            raise AccessDenied(
                "The provided encryption key does not match the one the object was stored with"
            )


def refuse_key(key: CustomerKey | None) -> None:
    """InvalidRequest when an SSE-C key comes with a request for a version not stored with one."""
    if key is not None:
        raise InvalidRequest("The encryption parameters are not applicable to this object.")


def customer_key(headers: Mapping[str, str], prefix: str = CUSTOMER) -> CustomerKey | None:
    """The SSE-C key of a request's headers (`prefix`: a copy source's ones), checked as S3 checks it."""
    algorithm = headers.get(prefix + "algorithm")
    key = headers.get(prefix + "key")
    md5 = headers.get(prefix + "key-md5")
    if algorithm is None and key is None and md5 is None:
        return None
    if algorithm is None or key is None or md5 is None:
        raise InvalidArgument(
            "Requests specifying Server Side Encryption with Customer provided keys must provide "
            "the encryption algorithm, the key and the key's MD5"
        )
    if algorithm.strip() != "AES256":
        raise InvalidArgument("The encryption algorithm of a customer-provided key must be AES256")
    try:
        raw = base64.b64decode(key.strip(), validate=True)
    except (binascii.Error, ValueError) as exc:
        raise InvalidArgument("The secret key was invalid for the specified algorithm.") from exc
    if len(raw) != 32:
        raise InvalidArgument("The secret key was invalid for the specified algorithm.")
    if _b64(hashlib.md5(raw, usedforsecurity=False).digest()) != md5.strip():
        raise InvalidArgument("The calculated MD5 hash of the key did not match the hash that was provided.")
    return CustomerKey(raw, md5.strip())


def check_request(headers: Mapping[str, str]) -> None:
    """Refuse what a write asks of x-amz-server-side-encryption that this store cannot do (SSE-KMS)."""
    asked = headers.get("x-amz-server-side-encryption")
    if asked is None:
        return
    asked = asked.strip()
    if asked in ("aws:kms", "aws:kms:dsse"):
        raise NotImplementedS3(
            f"Server-side encryption with {asked} (SSE-KMS) is not implemented: this store has no key "
            "management service. Use AES256 (SSE-S3, the default) or SSE-C."
        )
    if asked != SSE_S3:
        raise InvalidArgument(f"The encryption method specified is not supported: {asked[:20]!r}")
    if CUSTOMER + "algorithm" in headers:
        raise InvalidArgument(
            "Server Side Encryption with Customer provided key is incompatible with "
            "the encryption method specified"
        )


def response_headers(mode: str, key_md5: str) -> dict[str, str]:
    """The encryption headers of an answer about a version stored so."""
    if mode == SSE_S3:
        return {"x-amz-server-side-encryption": SSE_S3}
    if mode == SSE_C:
        return {CUSTOMER + "algorithm": "AES256", CUSTOMER + "key-md5": key_md5}
    return {}


def _b64(data: bytes) -> str:
    return base64.b64encode(data).decode()
