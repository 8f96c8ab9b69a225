"""The client's address as the edge vouches for it: a header the region trusts only with a valid HMAC.

Behind the edge, a region's peer is the edge itself, so throttles per client address would count every
shopper as one. The edge passes the address it saw in `X-Bookstore-Client: <address>;<hmac>`, the HMAC
keyed with the deployment's secret (which regions and the edge hold, and clients do not); a region
believes that header only when the HMAC is right, else it uses the connection's own peer. A region never
believes X-Forwarded-For (uvicorn's proxy headers are off), which anyone can send.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from typing import Any

HEADER = b"x-bookstore-client"
_MAX_ADDRESS = 64


def _mac(secret: str, address: str) -> str:
    message = b"bookstore client address\n" + address.encode("ascii", "replace")
    return hmac.new(secret.encode("utf-8"), message, hashlib.sha256).hexdigest()


def vouch(secret: str, address: str) -> bytes:
    """The header value by which the edge vouches that the request came from `address`."""
    address = address[:_MAX_ADDRESS]
    return f"{address};{_mac(secret, address)}".encode("ascii", "replace")


def client_address(scope: Mapping[str, Any], secret: str | None) -> str:
    """The client's address: the edge's header when its HMAC holds, else the peer of the connection."""
    if secret:
        for name, value in scope.get("headers", ()):
            if name == HEADER:
                address, _, mac = value.decode("latin-1").rpartition(";")
                if address and hmac.compare_digest(mac.encode(), _mac(secret, address).encode()):
                    return str(address)
                break
    client = scope.get("client")
    return str(client[0]) if client else "unknown"
