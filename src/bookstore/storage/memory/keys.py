"""MemoryKeys: the SigningKeyStore port held in a dict, for unit tests; the whole contract but durability."""

from __future__ import annotations

import threading

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey


class MemoryKeys:
    """Private signing keys by kid, made on first use; shared by every service given this instance."""

    def __init__(self) -> None:
        self._keys: dict[str, Ed25519PrivateKey] = {}
        self._lock = threading.Lock()

    def load_or_create(self, kid: str) -> Ed25519PrivateKey:
        with self._lock:
            if kid not in self._keys:
                self._keys[kid] = Ed25519PrivateKey.generate()
            return self._keys[kid]
