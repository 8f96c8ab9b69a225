"""The identity service (the original's Cognito user pool): accounts, sessions and access tokens as one."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from bookstore.domain.users import Principal
from bookstore.ports import Clock, SigningKeyStore, Table
from bookstore.services.attempts import Attempts
from bookstore.services.identity.accounts import Accounts
from bookstore.services.identity.passwords import Passwords
from bookstore.services.identity.sessions import Sessions
from bookstore.services.identity.tokens import Tokens


class Identity:
    """User accounts, sign-in sessions and access tokens, stored in five (replicated) tables.

    - USERS: accounts and their confirmation codes (accounts.Accounts).
    - SESSIONS and REVOCATIONS: sign-in sessions, refresh tokens that rotate, sticky sign-outs
      (sessions.Sessions).
    - ATTEMPTS: failed sign-ins and confirmation codes, counted in every region (services.attempts).
    - KEYS: public signing keys as JWKs; each region's private key stays in `signing_keys`, never in a
      table (tokens.Tokens).

    Returned values never contain password hashes, refresh-secret hashes or private keys.
    """

    def __init__(
        self,
        users: Table,
        keys: Table,
        sessions: Table,
        *,
        revocations: Table,
        attempts: Table,
        region: str,
        signing_keys: SigningKeyStore,
        clock: Clock,
        access_ttl: int = 900,
        refresh_ttl: int = 2_592_000,
        on_code: Callable[[str, str], None] | None = None,
        argon2_time_cost: int = 2,
        argon2_memory_cost: int = 19_456,
        argon2_parallelism: int = 1,
    ) -> None:
        if access_ttl <= 0 or refresh_ttl <= 0:
            raise ValueError("token lifetimes must be positive")
        if not region:
            raise ValueError("region is required")
        counted = Attempts(attempts, region=region, clock=clock)
        self._passwords = Passwords(
            time_cost=argon2_time_cost, memory_cost=argon2_memory_cost, parallelism=argon2_parallelism
        )
        self._accounts = Accounts(
            users, counted, self._passwords, region=region, clock=clock, on_code=on_code
        )
        self._tokens = Tokens(keys, signing_keys, region=region, clock=clock, access_ttl=access_ttl)
        self._sessions = Sessions(
            sessions,
            revocations,
            counted,
            self._accounts,
            self._tokens,
            region=region,
            clock=clock,
            refresh_ttl=refresh_ttl,
        )

    @property
    def kid(self) -> str:
        """The id of the key this region signs with."""
        return self._tokens.kid

    # ----- accounts (Accounts) --------------------------------------------------------------------------

    def signup(self, email: str, password: str) -> None:
        """An unconfirmed account with a confirmation code; answers alike for an existing email."""
        self._accounts.signup(email, password)

    def resend_code(self, email: str) -> None:
        """A new confirmation code for an unconfirmed account; answers alike for any email."""
        self._accounts.resend_code(email)

    def confirm(self, email: str, code: str) -> None:
        """Confirms the account with its code (expiring, void after wrong tries)."""
        self._accounts.confirm(email, code)

    def confirmation_code(self, email: str) -> str:
        """The pending confirmation code of an account (for operators: there is no mail server)."""
        return self._accounts.confirmation_code(email)

    def add_user(self, email: str, password: str, role: str = "customer") -> Principal:
        """A confirmed account (operators skip the confirmation code); Conflict if it exists."""
        return self._accounts.add_user(email, password, role)

    # ----- sessions (Sessions) --------------------------------------------------------------------------

    def signin(self, email: str, password: str, client: str | None = None) -> dict[str, Any]:
        """Checks the password (throttled) and opens a session: {accessToken, refreshToken, expiresIn}."""
        return self._sessions.signin(email, password, client)

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """New tokens for a live session; the refresh token presented is spent."""
        return self._sessions.refresh(refresh_token)

    def signout(self, session_id: str) -> None:
        """Ends the session `session_id`, in every region once its revocation has replicated."""
        self._sessions.signout(session_id)

    # ----- tokens (Tokens) --------------------------------------------------------------------------------

    def verify(self, access_token: str) -> Principal:
        """The principal an access token proves; Unauthorized, with the reason, for any other token."""
        return self._tokens.verify(access_token)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public signing keys of every region known here, as a JWK Set."""
        return self._tokens.jwks()

    def ensure_signing_key(self) -> str:
        """Loads or creates this region's signing key and publishes it; returns its kid. Idempotent."""
        return self._tokens.ensure_signing_key()
