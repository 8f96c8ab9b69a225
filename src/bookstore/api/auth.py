"""Bearer tokens of API requests: the Authorization header to the signed-in Principal."""

from __future__ import annotations

from bookstore.domain.errors import Unauthorized
from bookstore.domain.users import Principal
from bookstore.services.identity import Identity


def bearer_principal(identity: Identity, authorization: str | None) -> Principal:
    """Who the `Authorization: Bearer <accessToken>` header proves; Unauthorized with the reason otherwise."""
    if not authorization:
        raise Unauthorized("sign in first: send 'Authorization: Bearer <accessToken>' (POST /auth/signin)")
    scheme, _, token = authorization.partition(" ")
    if scheme.lower() != "bearer" or not token.strip():
        raise Unauthorized("the Authorization header must be 'Bearer <accessToken>'")
    return identity.verify(token.strip())
