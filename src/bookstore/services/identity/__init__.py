"""The identity service: accounts, sessions and tokens (one module each), composed by `Identity`."""

from bookstore.services.identity.accounts import (
    CODE_TRIES,
    CODE_TTL_MS,
    RESENDS,
    WRONG_CODE,
    WRONG_CREDENTIALS,
)
from bookstore.services.identity.service import Identity
from bookstore.services.identity.sessions import (
    INVALID_REFRESH,
    SIGNED_OUT,
    SIGNIN_PER_ACCOUNT,
    SIGNIN_PER_ACCOUNT_AND_CLIENT,
    SIGNIN_PER_CLIENT,
)
from bookstore.services.identity.tokens import ALGORITHM, AUDIENCE, ISSUER, REQUIRED_CLAIMS

__all__ = [
    "ALGORITHM",
    "AUDIENCE",
    "CODE_TRIES",
    "CODE_TTL_MS",
    "INVALID_REFRESH",
    "ISSUER",
    "REQUIRED_CLAIMS",
    "RESENDS",
    "SIGNED_OUT",
    "SIGNIN_PER_ACCOUNT",
    "SIGNIN_PER_ACCOUNT_AND_CLIENT",
    "SIGNIN_PER_CLIENT",
    "WRONG_CODE",
    "WRONG_CREDENTIALS",
    "Identity",
]
