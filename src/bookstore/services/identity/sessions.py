"""Sessions: sign-in (throttled), refresh tokens that rotate on every use with reuse detection, sign-out."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import re
import secrets
import uuid
from typing import Any, Final

from bookstore.domain.errors import ConditionFailed, Forbidden, Unauthorized, ValidationError
from bookstore.domain.users import normalise_email
from bookstore.ports import AttributeEquals, Clock, Item, ItemAbsent, ItemExists, Table
from bookstore.services.attempts import Attempts, Limit
from bookstore.services.identity.accounts import Accounts
from bookstore.services.identity.tokens import Tokens

log = logging.getLogger(__name__)

INVALID_REFRESH: Final = "invalid refresh token; sign in again"
SIGNED_OUT: Final = "this session was signed out; sign in again"

# Failed sign-ins in windows of 15 minutes, counted in every region. The strict limit is per account AND
# client address, so an attacker's failures lock the account only for the attacker's own address; the
# per-account ceiling, looser, stops guesses spread over many addresses (reaching it takes several
# addresses' worth of failures, and it then stops every address until the window ends); the per-address
# limit stops one address guessing over many accounts.
SIGNIN_PER_ACCOUNT_AND_CLIENT = Limit("failed sign-ins for this account from this address", 10, 900)
SIGNIN_PER_ACCOUNT = Limit("failed sign-ins for this account", 100, 900)
SIGNIN_PER_CLIENT = Limit("failed sign-ins from this address", 30, 900)
# Hashes of spent refresh secrets a session remembers, to recognise a replayed one (reuse detection).
_SPENT_KEPT: Final = 32
# Longer refresh tokens are refused before any parsing: none this service issues comes near this size.
_MAX_REFRESH_TOKEN: Final = 256
_SESSION_ID_RE = re.compile(r"[0-9a-f]{32}")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


# A refresh secret is a random nonce and a tag: the HMAC of the session id and the nonce under the session's
# chain key (random, written once at sign-in, never sent to a client). The tag proves a secret was issued for
# the session by some region. Why: two regions that rotate the same token within the replication lag both
# issue a secret, and last-writer-wins keeps one; the other is neither current nor in the kept `spent` list,
# yet its holder must be caught as reuse (one of the two holders is not the user), not just refused.
_NONCE_CHARS: Final = 22  # token_urlsafe(16)
_TAG_BYTES: Final = 16


def _tag(chain_key: str, session_id: str, nonce: str) -> str:
    mac = hmac.new(bytes.fromhex(chain_key), f"{session_id}.{nonce}".encode(), hashlib.sha256)
    return base64.urlsafe_b64encode(mac.digest()[:_TAG_BYTES]).decode("ascii").rstrip("=")


def _new_secret(chain_key: str, session_id: str) -> str:
    nonce = secrets.token_urlsafe(16)
    return nonce + _tag(chain_key, session_id, nonce)


def _issued_for(session: Item, session_id: str, secret: str) -> bool:
    """Whether `secret` carries the tag of `session`'s chain key: issued for it (by any region)."""
    chain_key = session.get("chainKey")
    if not isinstance(chain_key, str) or len(secret) <= _NONCE_CHARS:
        return False  # a session signed in before chained secrets: only its `spent` list tells
    nonce, tag = secret[:_NONCE_CHARS], secret[_NONCE_CHARS:]
    return hmac.compare_digest(tag.encode(), _tag(chain_key, session_id, nonce).encode())


class Sessions:
    """Sign-in sessions in two tables.

    - SESSIONS (key `sessionId`): one per sign-in; holds the SHA-256 of the current refresh secret (never
      the secret) and of the secrets it replaced. Refresh tokens rotate on every use.
    - REVOCATIONS (key `sessionId`, written once): sign-outs and sessions revoked on reuse of a spent
      refresh token. No write of the session can undo one, whatever the order in which they replicate.
    Failed sign-ins are counted in `attempts`, in every region.
    """

    def __init__(
        self,
        sessions: Table,
        revocations: Table,
        attempts: Attempts,
        accounts: Accounts,
        tokens: Tokens,
        *,
        region: str,
        clock: Clock,
        refresh_ttl: int,
    ) -> None:
        self._sessions = sessions
        self._revocations = revocations
        self._attempts = attempts
        self._accounts = accounts
        self._tokens = tokens
        self._region = region
        self._clock = clock
        self._refresh_ttl = refresh_ttl

    def signin(self, email: str, password: str, client: str | None = None) -> dict[str, Any]:
        """Checks the password and opens a session: {accessToken, refreshToken, expiresIn (seconds)}.

        An unknown email and a wrong password give the same Unauthorized, after the same amount of argon2
        work, so neither the answer nor its timing tells whether an account exists. A right password on an
        unconfirmed account gives Forbidden. Failed sign-ins are counted, in every region, per email and
        `client` (the client's address; None counts as one unknown address), per email and per client:
        at SIGNIN_PER_ACCOUNT_AND_CLIENT, SIGNIN_PER_ACCOUNT or SIGNIN_PER_CLIENT, TooManyRequests answers
        without hashing the password, until the window ends. The attempt is counted before the password
        is hashed and given back when it was right, so concurrent sign-ins cannot pass a limit by the
        number in flight.
        """
        email = normalise_email(email)
        throttled = [
            (f"signin:{email}|{client or 'unknown'}", SIGNIN_PER_ACCOUNT_AND_CLIENT),
            (f"signin:{email}", SIGNIN_PER_ACCOUNT),
        ]
        if client:
            throttled.append((f"signin-from:{client}", SIGNIN_PER_CLIENT))
        reservation = self._attempts.reserve(throttled)
        try:
            user = self._accounts.checked_password(email, password)
        except Unauthorized:
            raise  # a failed sign-in: it stays counted
        except BaseException:
            self._attempts.release(reservation)
            raise
        self._attempts.release(reservation)
        if user.get("confirmed") is not True:
            raise Forbidden("confirm your email with the code first")
        self._accounts.rehash_if_needed(email, user["passwordHash"], password)

        session_id = uuid.uuid4().hex
        chain_key = secrets.token_hex(32)
        secret = _new_secret(chain_key, session_id)
        now = self._clock.now_ms()
        self._sessions.put(
            {
                "sessionId": session_id,
                "userId": user["userId"],
                "email": email,
                "chainKey": chain_key,
                "secretHash": _sha256(secret),
                "createdMs": now,
                "expiresMs": now + self._refresh_ttl * 1000,
                "revoked": False,
                "region": self._region,
            },
            condition=ItemAbsent(),
        )
        log.info("region=%s event=signin email=%s session=%s", self._region, email, session_id)
        return {
            "accessToken": self._tokens.issue(user, email, session_id),
            "refreshToken": f"{session_id}.{secret}",
            "expiresIn": self._tokens.access_ttl,
        }

    def refresh(self, refresh_token: str) -> dict[str, Any]:
        """A new access token and a new refresh token for a live session: {accessToken, refreshToken,
        expiresIn}. The refresh token presented is spent: presenting it again revokes the whole session
        (reuse detection: one of its two holders is not the user).

        Raises Unauthorized when the refresh token is malformed, unknown or spent, or its session was
        signed out (a revocation recorded in any region), has expired, or belongs to an account that no
        longer exists.
        """
        if not isinstance(refresh_token, str) or len(refresh_token) > _MAX_REFRESH_TOKEN:
            raise Unauthorized(INVALID_REFRESH)
        session_id, dot, secret = refresh_token.partition(".")
        if not dot or not secret or not _SESSION_ID_RE.fullmatch(session_id):
            raise Unauthorized(INVALID_REFRESH)
        if self._revocations.get({"sessionId": session_id}) is not None:
            raise Unauthorized(SIGNED_OUT)
        for _ in range(3):
            session = self._sessions.get({"sessionId": session_id})
            if session is None:
                raise Unauthorized(INVALID_REFRESH)
            stored = session.get("secretHash")
            if not isinstance(stored, str):
                raise Unauthorized(INVALID_REFRESH)
            presented = _sha256(secret)
            if not hmac.compare_digest(stored.encode(), presented.encode()):
                spent = session.get("spent")
                # Spent here (kept in the list), or issued for this session and since replaced: a secret
                # rotated in another region at the same time as here, whose rotation lost (see _tag).
                if (isinstance(spent, list) and presented in spent) or _issued_for(
                    session, session_id, secret
                ):
                    self._revoke(session_id, "reuse")
                    log.warning("region=%s event=refresh_token_reuse session=%s", self._region, session_id)
                    raise Unauthorized(
                        "this refresh token was used before, so the session is signed out; sign in again"
                    )
                raise Unauthorized(INVALID_REFRESH)
            self._live(session)
            user = self._session_user(session)
            chain_key = session.get("chainKey")
            fresh = (
                _new_secret(chain_key, session_id)
                if isinstance(chain_key, str)
                else secrets.token_urlsafe(32)
            )
            spent = session.get("spent")
            kept = ([*spent] if isinstance(spent, list) else [])[-(_SPENT_KEPT - 1) :]
            try:
                self._sessions.update(
                    {"sessionId": session_id},
                    {
                        "secretHash": _sha256(fresh),
                        "spent": [*kept, presented],
                        "rotatedMs": self._clock.now_ms(),
                    },
                    condition=AttributeEquals("secretHash", stored),
                )
            except ConditionFailed:
                continue  # rotated meanwhile by a concurrent use of this token: that one is reuse
            return {
                "accessToken": self._tokens.issue(user, user["email"], session_id),
                "refreshToken": f"{session_id}.{fresh}",
                "expiresIn": self._tokens.access_ttl,
            }
        raise Unauthorized(INVALID_REFRESH)

    def _live(self, session: Item) -> None:
        """Raise Unauthorized unless `session` is neither signed out nor expired."""
        if session.get("revoked") is not False:
            raise Unauthorized(SIGNED_OUT)
        expires = session.get("expiresMs")
        if not isinstance(expires, int) or self._clock.now_ms() >= expires:
            raise Unauthorized("this session has expired; sign in again")

    def _session_user(self, session: Item) -> Item:
        """The account of `session` (with its normalised email); Unauthorized when it no longer exists."""
        email = session.get("email")
        if not isinstance(email, str):
            raise Unauthorized(INVALID_REFRESH)
        user = self._accounts.get(email)
        if user is None or user.get("userId") != session.get("userId"):
            raise Unauthorized("the account of this session no longer exists")
        return {**user, "email": email}

    def signout(self, session_id: str) -> None:
        """Ends the session `session_id` (an access token's `sid` claim, i.e. `Principal.session_id`).

        Its refresh token stops working at once here, and in every region once the revocation has
        replicated: it is recorded in REVOCATIONS even when the session itself has not reached this region
        yet, and no later write of the session undoes it. Access tokens already issued for it stay valid
        until they expire (at most `access_ttl` seconds), as with Cognito's sign-out: verifying them reads
        no table. Signing out twice does nothing more.
        """
        if not isinstance(session_id, str) or not _SESSION_ID_RE.fullmatch(session_id):
            raise ValidationError("sign-out needs the session id of an access token")
        self._revoke(session_id, "signout")
        log.info("region=%s event=signout session=%s", self._region, session_id)

    def _revoke(self, session_id: str, reason: str) -> None:
        """Record the session's revocation (sticky), and mark the session itself when it is here."""
        now = self._clock.now_ms()
        # ConditionFailed: revoked before (here, or in a region whose revocation has arrived).
        with contextlib.suppress(ConditionFailed):
            self._revocations.put(
                {"sessionId": session_id, "reason": reason, "revokedMs": now, "region": self._region},
                condition=ItemAbsent(),
            )
        with contextlib.suppress(ConditionFailed):
            self._sessions.update(
                {"sessionId": session_id}, {"revoked": True, "revokedMs": now}, condition=ItemExists()
            )
