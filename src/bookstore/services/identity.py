"""The identity service (the original's Cognito user pool): accounts, sessions, JWT access tokens, JWKS."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import hmac
import logging
import os
import re
import secrets
import tempfile
import threading
import uuid
from collections import OrderedDict
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Final

import jwt
from argon2 import PasswordHasher
from argon2.exceptions import InvalidHashError, VerificationError
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bookstore.domain.errors import (
    ConditionFailed,
    Conflict,
    Forbidden,
    NotFound,
    StorageError,
    Unauthorized,
    ValidationError,
)
from bookstore.domain.users import (
    PASSWORD_MAX_LENGTH,
    ROLES,
    Principal,
    check_confirmation_code,
    check_password,
    check_role,
    normalise_email,
)
from bookstore.ports import AttributeEquals, Clock, Item, ItemAbsent, ItemExists, Table
from bookstore.services.attempts import FOREVER, Attempts, Limit

log = logging.getLogger(__name__)

ISSUER: Final = "bookstore"
AUDIENCE: Final = "bookstore-api"
ALGORITHM: Final = "EdDSA"
REQUIRED_CLAIMS: Final = ("sub", "email", "role", "sid", "iat", "exp", "iss", "aud", "region")

WRONG_CREDENTIALS: Final = "wrong email or password"
INVALID_REFRESH: Final = "invalid refresh token; sign in again"
WRONG_CODE: Final = "wrong confirmation code; check the code you were sent"
SIGNED_OUT: Final = "this session was signed out; sign in again"

# A confirmation code lives this long and allows this many wrong tries (counted in every region);
# then a new one is asked for with `resend_code` (POST /auth/resend-code).
CODE_TTL_MS: Final = 24 * 3600 * 1000
CODE_TRIES = Limit("wrong confirmation codes", 5, FOREVER)
RESENDS = Limit("confirmation codes asked for", 5, 3600)
# Failed sign-ins per account and per client address, in windows of 15 minutes, counted in every region.
SIGNIN_PER_ACCOUNT = Limit("failed sign-ins for this account", 10, 900)
SIGNIN_PER_CLIENT = Limit("failed sign-ins from this address", 30, 900)
# Hashes of spent refresh secrets a session remembers, to recognise a replayed one (reuse detection).
_SPENT_KEPT: Final = 32

# Longer strings are refused before any parsing: no token this service issues comes near these sizes.
_MAX_ACCESS_TOKEN: Final = 4096
# Verified tokens remembered (least recently verified forgotten first).
_VERIFIED_TOKENS = 10_000
_MAX_REFRESH_TOKEN: Final = 256
# A cached public key is re-read from the keys table at most this often after a signature fails with it,
# so a region that had to replace its key (same kid) is picked up without a restart, and forged tokens
# cannot turn every request into a table read.
_KEY_RECHECK_MS: Final = 30_000
_SESSION_ID_RE = re.compile(r"[0-9a-f]{32}")


@dataclass(frozen=True)
class _SigningKey:
    kid: str
    private: Ed25519PrivateKey


@dataclass(frozen=True)
class _CachedKey:
    public: Ed25519PublicKey
    x: str
    loaded_ms: int


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode("ascii")


def _b64url_decode(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def _raw_public(key: Ed25519PublicKey) -> bytes:
    return key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _public_jwk(kid: str, x: str) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


class Identity:
    """User accounts, sign-in sessions and access tokens, stored in five (replicated) tables.

    - USERS (key `email`): userId, argon2 passwordHash, role, confirmed, and while unconfirmed the
      confirmationCode with its codeId and codeIssuedMs.
    - SESSIONS (key `sessionId`): one per sign-in; holds the SHA-256 of the current refresh secret (never
      the secret) and of the secrets it replaced. Refresh tokens rotate on every use.
    - REVOCATIONS (key `sessionId`, written once): sign-outs and sessions revoked on reuse of a spent
      refresh token. No write of the session can undo one, whatever the order in which they replicate.
    - ATTEMPTS: failed sign-ins and confirmation codes, counted in every region (services.attempts).
    - KEYS (key `kid`): public signing keys as JWKs. Each region signs with its own Ed25519 key, kept in
      `key_dir` and never in a table; because verification needs only the public key named by the token's
      `kid`, a token issued in any region verifies in every region that has received the KEYS table.

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
        key_dir: Path,
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
        self._users = users
        self._keys = keys
        self._sessions = sessions
        self._revocations = revocations
        self._attempts = Attempts(attempts, region=region, clock=clock)
        self._region = region
        self._key_dir = Path(key_dir)
        self._clock = clock
        self._access_ttl = access_ttl
        self._refresh_ttl = refresh_ttl
        self._on_code = on_code
        self._hasher = PasswordHasher(
            time_cost=argon2_time_cost, memory_cost=argon2_memory_cost, parallelism=argon2_parallelism
        )
        self._dummy_hash: str | None = None
        self._lock = threading.Lock()
        self._signer: _SigningKey | None = None
        self._key_cache: dict[str, _CachedKey] = {}
        # Tokens already verified, with their principal and expiry: a shopper sends the same token with
        # every request, and a signature check costs far more than the request's own work.
        # Each entry names the key it was checked with, so a replaced key voids what it vouched for.
        self._verified: OrderedDict[str, tuple[Principal, int, str, str]] = OrderedDict()

    @property
    def kid(self) -> str:
        """The id of the key this region signs with."""
        return f"{self._region}-1"

    # ----- accounts -------------------------------------------------------------------------------------

    def signup(self, email: str, password: str) -> None:
        """Creates an unconfirmed customer account and hands its confirmation code to `on_code`.

        An email that already has an account gets the same answer, after the same work, and changes
        nothing (no code is sent): the answer does not tell whether an account exists. Its owner asks for
        a new code with `resend_code`, or signs in. Raises ValidationError for a malformed email or password.
        """
        email = normalise_email(email)
        check_password(password)
        code = self._new_code()
        item: Item = {
            "email": email,
            "userId": uuid.uuid4().hex,
            "passwordHash": self._hasher.hash(password),
            "role": "customer",
            "confirmed": False,
            **code,
            "createdMs": self._clock.now_ms(),
        }
        try:
            self._users.put(item, condition=ItemAbsent())
        except ConditionFailed:
            log.info("region=%s event=signup_of_existing_account email=%s", self._region, email)
            return
        log.info("region=%s event=signup email=%s", self._region, email)
        if self._on_code is not None:
            self._on_code(email, code["confirmationCode"])

    def resend_code(self, email: str) -> None:
        """Replaces the confirmation code of an unconfirmed account and hands it to `on_code`.

        Answers alike whether or not such an account exists (nothing happens when none does). Raises
        TooManyRequests after RESENDS.most requests for one email within an hour.
        """
        email = normalise_email(email)
        subject = f"resend:{email}"
        self._attempts.check(subject, RESENDS)
        self._attempts.record(subject, RESENDS)
        user = self._users.get({"email": email})
        if user is None or user.get("confirmed") is True:
            return
        code = self._new_code()
        try:
            self._users.update({"email": email}, code, condition=AttributeEquals("userId", user["userId"]))
        except ConditionFailed:
            return  # the account was replaced meanwhile: it has its own code
        log.info("region=%s event=code_resent email=%s", self._region, email)
        if self._on_code is not None:
            self._on_code(email, code["confirmationCode"])

    def confirm(self, email: str, code: str) -> None:
        """Confirms the account with the code sent at sign-up; the same code again does nothing more.

        A code expires CODE_TTL_MS after it was issued and is void after CODE_TRIES.most wrong tries
        (counted in every region); then only a new code (`resend_code`) confirms. Raises ValidationError
        for a wrong, malformed, expired or void code, and alike for an unknown email or a confirmed
        account, so that the answers tell nothing of which accounts exist.
        """
        email = normalise_email(email)
        code = check_confirmation_code(code)
        user = self._users.get({"email": email})
        code_id = "none" if user is None else str(user.get("codeId", "first"))
        subject = f"confirm:{email}:{code_id}"
        if self._attempts.count(subject, CODE_TRIES) >= CODE_TRIES.most:
            raise ValidationError(
                f"this confirmation code is void after {CODE_TRIES.most} wrong tries; "
                "ask for a new one (POST /auth/resend-code)"
            )
        stored = None if user is None else user.get("confirmationCode")
        if not isinstance(stored, str) or not hmac.compare_digest(stored.encode(), code.encode()):
            self._attempts.record(subject, CODE_TRIES)
            raise ValidationError(WRONG_CODE)
        assert user is not None
        if user.get("confirmed") is True:
            return  # the right code sent again (a retry): confirmed already
        issued = user.get("codeIssuedMs", user.get("createdMs"))
        if not isinstance(issued, int) or self._clock.now_ms() >= issued + CODE_TTL_MS:
            raise ValidationError(
                "this confirmation code has expired; ask for a new one (POST /auth/resend-code)"
            )
        try:
            self._users.update(
                {"email": email},
                # The code stays: sent again, it answers as it did (a retry), and no other code does.
                {"confirmed": True, "confirmedMs": self._clock.now_ms()},
                condition=AttributeEquals("userId", user["userId"]),
            )
        except ConditionFailed:
            raise Conflict("the account changed while it was being confirmed; try again") from None
        log.info("region=%s event=confirm email=%s", self._region, email)

    def confirmation_code(self, email: str) -> str:
        """The pending confirmation code of an account (for operators: there is no mail server).

        Raises NotFound for an unknown email, Conflict when the account is already confirmed.
        """
        email = normalise_email(email)
        user = self._users.get({"email": email})
        if user is None:
            raise NotFound(f"no account with the email {email}")
        code = user.get("confirmationCode")
        if user.get("confirmed") is True or not isinstance(code, str):
            raise Conflict(f"the account {email} is already confirmed")
        return code

    def add_user(self, email: str, password: str, role: str = "customer") -> Principal:
        """Creates a confirmed account (operators skip the confirmation code); Conflict if it exists."""
        email = normalise_email(email)
        check_password(password)
        checked_role = check_role(role)
        user_id = uuid.uuid4().hex
        now = self._clock.now_ms()
        item: Item = {
            "email": email,
            "userId": user_id,
            "passwordHash": self._hasher.hash(password),
            "role": checked_role,
            "confirmed": True,
            "createdMs": now,
            "confirmedMs": now,
        }
        try:
            self._users.put(item, condition=ItemAbsent())
        except ConditionFailed:
            raise Conflict("an account with this email already exists") from None
        log.info("region=%s event=add_user email=%s role=%s", self._region, email, checked_role)
        return Principal(user_id=user_id, email=email, role=checked_role)

    # ----- sessions ---------------------------------------------------------------------------------------

    def signin(self, email: str, password: str, client: str | None = None) -> dict[str, Any]:
        """Checks the password and opens a session: {accessToken, refreshToken, expiresIn (seconds)}.

        An unknown email and a wrong password give the same Unauthorized, after the same amount of argon2
        work, so neither the answer nor its timing tells whether an account exists. A right password on an
        unconfirmed account gives Forbidden. Failed sign-ins are counted per email and per `client` (the
        client's address), in every region: at SIGNIN_PER_ACCOUNT or SIGNIN_PER_CLIENT, TooManyRequests
        answers before any password is hashed, until the window ends.
        """
        email = normalise_email(email)
        throttled = [(f"signin:{email}", SIGNIN_PER_ACCOUNT)]
        if client:
            throttled.append((f"signin-from:{client}", SIGNIN_PER_CLIENT))
        for subject, limit in throttled:
            self._attempts.check(subject, limit)
        try:
            user = self._checked_password(email, password)
        except Unauthorized:
            for subject, limit in throttled:
                self._attempts.record(subject, limit)
            raise
        if user.get("confirmed") is not True:
            raise Forbidden("confirm your email with the code first")
        self._rehash_if_needed(email, user["passwordHash"], password)

        session_id = uuid.uuid4().hex
        secret = secrets.token_urlsafe(32)
        now = self._clock.now_ms()
        self._sessions.put(
            {
                "sessionId": session_id,
                "userId": user["userId"],
                "email": email,
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
            "accessToken": self._access_token(user, email, session_id),
            "refreshToken": f"{session_id}.{secret}",
            "expiresIn": self._access_ttl,
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
                if isinstance(spent, list) and presented in spent:
                    self._revoke(session_id, "reuse")
                    log.warning("region=%s event=refresh_token_reuse session=%s", self._region, session_id)
                    raise Unauthorized(
                        "this refresh token was used before, so the session is signed out; sign in again"
                    )
                raise Unauthorized(INVALID_REFRESH)
            self._live(session)
            user = self._session_user(session)
            fresh = secrets.token_urlsafe(32)
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
                "accessToken": self._access_token(user, user["email"], session_id),
                "refreshToken": f"{session_id}.{fresh}",
                "expiresIn": self._access_ttl,
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
        user = self._users.get({"email": email})
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

    # ----- tokens -----------------------------------------------------------------------------------------

    def verify(self, access_token: str) -> Principal:
        """The principal an access token proves; raises Unauthorized, with the reason, for any other token.

        Accepts only EdDSA tokens signed by a key of the KEYS table, issued by "bookstore" for
        "bookstore-api", unexpired by this region's clock, with every claim present and well typed.
        `iat` is not compared with the clock, so a token from a region whose clock runs ahead still works.
        """
        if not isinstance(access_token, str) or not access_token:
            raise Unauthorized("an access token is required")
        if len(access_token) > _MAX_ACCESS_TOKEN:
            raise Unauthorized("malformed access token (too long)")
        known = self._verified.get(access_token)
        if known is not None:
            principal, expires_s, kid, x = known
            key = self._key_cache.get(kid)
            if key is not None and key.x == x and self._clock.now_ms() < expires_s * 1000:
                return principal
            self._verified.pop(access_token, None)
        principal = self._verify_signed(access_token)
        self._remember(access_token, principal)
        return principal

    def _remember(self, access_token: str, principal: Principal) -> None:
        claims = jwt.decode(access_token, options={"verify_signature": False})
        kid = jwt.get_unverified_header(access_token)["kid"]
        key = self._key_cache.get(kid)
        if key is None:
            return
        with self._lock:
            self._verified[access_token] = (principal, int(claims["exp"]), kid, key.x)
            while len(self._verified) > _VERIFIED_TOKENS:
                self._verified.popitem(last=False)

    def _verify_signed(self, access_token: str) -> Principal:
        try:
            header = jwt.get_unverified_header(access_token)
        except jwt.PyJWTError:
            raise Unauthorized("malformed access token") from None
        alg = header.get("alg")
        if alg != ALGORITHM:
            raise Unauthorized(f"access token algorithm {alg!r} is not accepted (only {ALGORITHM})")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid:
            raise Unauthorized("access token has no key id (kid)")
        cached = self._cached_key(kid)
        if cached is None:
            raise Unauthorized(f"access token is signed with an unknown key {kid!r}")
        try:
            claims = self._decode(access_token, cached.public)
        except jwt.InvalidSignatureError:
            renewed = self._recheck_key(kid, cached)
            if renewed is None:
                raise Unauthorized("access token signature is invalid") from None
            try:
                claims = self._decode(access_token, renewed.public)
            except jwt.InvalidSignatureError:
                raise Unauthorized("access token signature is invalid") from None
        return self._principal(claims)

    def jwks(self) -> dict[str, list[dict[str, str]]]:
        """The public signing keys of every region known here, as a JWK Set."""
        self._signing_key()
        found: list[dict[str, str]] = []
        cursor: str | None = None
        while True:
            page = self._keys.scan(cursor=cursor)
            for item in page.items:
                kid, x = item.get("kid"), item.get("x")
                if isinstance(kid, str) and isinstance(x, str) and item.get("kty") == "OKP":
                    found.append(_public_jwk(kid, x))
            cursor = page.cursor
            if cursor is None:
                break
        return {"keys": sorted(found, key=lambda jwk: jwk["kid"])}

    def ensure_signing_key(self) -> str:
        """Loads or creates this region's signing key and publishes it; returns its kid. Idempotent."""
        return self._signing_key().kid

    # ----- internals ------------------------------------------------------------------------------------

    def _checked_password(self, email: str, password: str) -> Item:
        """The account of `email` when `password` is its password; Unauthorized (after equal work) if not."""
        if not isinstance(password, str) or len(password) > PASSWORD_MAX_LENGTH:
            # No account can have such a password; refusing before hashing bounds the work per request.
            raise Unauthorized(WRONG_CREDENTIALS)
        user = self._users.get({"email": email})
        if user is None:
            self._password_matches(self._dummy(), password)
            raise Unauthorized(WRONG_CREDENTIALS)
        stored = user.get("passwordHash")
        if not isinstance(stored, str) or not self._password_matches(stored, password):
            raise Unauthorized(WRONG_CREDENTIALS)
        return user

    def _new_code(self) -> Item:
        """A new confirmation code with its id (its wrong tries are counted under it) and issue time."""
        return {
            "confirmationCode": f"{secrets.randbelow(1_000_000):06d}",
            "codeId": uuid.uuid4().hex,
            "codeIssuedMs": self._clock.now_ms(),
        }

    def _dummy(self) -> str:
        if self._dummy_hash is None:
            self._dummy_hash = self._hasher.hash(secrets.token_urlsafe(16))
        return self._dummy_hash

    def _password_matches(self, stored: str, password: str) -> bool:
        try:
            return self._hasher.verify(stored, password)
        except (VerificationError, InvalidHashError):
            return False

    def _rehash_if_needed(self, email: str, stored: str, password: str) -> None:
        try:
            if not self._hasher.check_needs_rehash(stored):
                return
        except InvalidHashError:
            return
        # ConditionFailed: the password changed meanwhile, and that newer hash stays.
        with contextlib.suppress(ConditionFailed):
            self._users.update(
                {"email": email},
                {"passwordHash": self._hasher.hash(password)},
                condition=AttributeEquals("passwordHash", stored),
            )

    def _access_token(self, user: Item, email: str, session_id: str) -> str:
        key = self._signing_key()
        now_s = self._clock.now_ms() // 1000
        claims = {
            "iss": ISSUER,
            "aud": AUDIENCE,
            "sub": user["userId"],
            "email": email,
            "role": check_role(user.get("role", "customer")),
            "sid": session_id,
            "iat": now_s,
            "exp": now_s + self._access_ttl,
            "region": self._region,
        }
        return jwt.encode(claims, key.private, algorithm=ALGORITHM, headers={"kid": key.kid})

    @staticmethod
    def _decode(token: str, public: Ed25519PublicKey) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                public,
                algorithms=[ALGORITHM],
                audience=AUDIENCE,
                issuer=ISSUER,
                # Time claims are checked against the injected clock in _principal, not the host's.
                options={
                    "require": list(REQUIRED_CLAIMS),
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                },
            )
        except jwt.InvalidSignatureError:
            raise
        except jwt.MissingRequiredClaimError as exc:
            raise Unauthorized(f"access token lacks the {exc.claim!r} claim") from None
        except jwt.InvalidAudienceError:
            raise Unauthorized(f"access token is not meant for {AUDIENCE}") from None
        except jwt.InvalidIssuerError:
            raise Unauthorized(f"access token was not issued by {ISSUER}") from None
        except jwt.PyJWTError as exc:
            raise Unauthorized(f"invalid access token ({exc})") from None

    def _principal(self, claims: dict[str, Any]) -> Principal:
        exp, iat = claims["exp"], claims["iat"]
        if (
            not isinstance(exp, int)
            or isinstance(exp, bool)
            or not isinstance(iat, int)
            or isinstance(iat, bool)
        ):
            raise Unauthorized("access token has malformed time claims")
        if self._clock.now_ms() >= exp * 1000:
            raise Unauthorized("access token has expired; refresh it or sign in again")
        for name in ("sub", "email", "sid", "region"):
            if not isinstance(claims[name], str) or not claims[name]:
                raise Unauthorized(f"access token has a malformed {name!r} claim")
        role = claims["role"]
        if role not in ROLES:
            raise Unauthorized(f"access token has an unknown role {role!r}")
        return Principal(
            user_id=claims["sub"], email=claims["email"], role=check_role(role), session_id=claims["sid"]
        )

    def _cached_key(self, kid: str) -> _CachedKey | None:
        with self._lock:
            cached = self._key_cache.get(kid)
        return cached if cached is not None else self._load_public(kid)

    def _recheck_key(self, kid: str, cached: _CachedKey) -> _CachedKey | None:
        """A newer public key for `kid` when the table holds one and the cached one is old enough to doubt."""
        if self._clock.now_ms() - cached.loaded_ms < _KEY_RECHECK_MS:
            return None
        fresh = self._load_public(kid)
        if fresh is None or fresh.x == cached.x:
            return None
        return fresh

    def _load_public(self, kid: str) -> _CachedKey | None:
        item = self._keys.get({"kid": kid})
        if item is None:
            return None
        x = item.get("x")
        if item.get("kty") != "OKP" or item.get("crv") != "Ed25519" or not isinstance(x, str):
            log.warning("region=%s event=bad_public_key kid=%s", self._region, kid)
            return None
        try:
            public = Ed25519PublicKey.from_public_bytes(_b64url_decode(x))
        except ValueError:
            log.warning("region=%s event=bad_public_key kid=%s", self._region, kid)
            return None
        cached = _CachedKey(public=public, x=x, loaded_ms=self._clock.now_ms())
        with self._lock:
            self._key_cache[kid] = cached
        return cached

    def _signing_key(self) -> _SigningKey:
        with self._lock:
            if self._signer is None:
                signer = _SigningKey(kid=self.kid, private=self._load_or_create_private())
                self._publish(signer)
                self._signer = signer
            return self._signer

    def _publish(self, signer: _SigningKey) -> None:
        public = signer.private.public_key()
        x = _b64url(_raw_public(public))
        item = self._keys.get({"kid": signer.kid})
        if item is None or item.get("x") != x:
            if item is not None:
                # The private key behind the published one is gone: tokens it signed can no longer be
                # honoured anyway, and this region must be able to sign again.
                log.warning("region=%s event=signing_key_replaced kid=%s", self._region, signer.kid)
            self._keys.put(
                {
                    **_public_jwk(signer.kid, x),
                    "region": self._region,
                    "createdMs": self._clock.now_ms(),
                }
            )
        self._key_cache[signer.kid] = _CachedKey(public=public, x=x, loaded_ms=self._clock.now_ms())

    def _key_path(self) -> Path:
        return self._key_dir / f"{self.kid}.pem"

    def _load_or_create_private(self) -> Ed25519PrivateKey:
        path = self._key_path()
        try:
            self._key_dir.mkdir(parents=True, exist_ok=True, mode=0o700)
            if not path.exists():
                pem = Ed25519PrivateKey.generate().private_bytes(
                    serialization.Encoding.PEM,
                    serialization.PrivateFormat.PKCS8,
                    serialization.NoEncryption(),
                )
                if self._write_new_key(path, pem):
                    log.info("region=%s event=signing_key_created path=%s", self._region, path)
            if path.stat().st_mode & 0o077:
                os.chmod(path, 0o600)
            data = path.read_bytes()
        except OSError as exc:
            raise StorageError(f"cannot read or create the signing key {path}: {exc}") from exc
        try:
            key = serialization.load_pem_private_key(data, password=None)
        except ValueError as exc:
            raise StorageError(f"{path} does not hold a readable private key: {exc}") from exc
        if not isinstance(key, Ed25519PrivateKey):
            raise StorageError(f"{path} holds a {type(key).__name__}, not an Ed25519 private key")
        return key

    @staticmethod
    def _write_new_key(path: Path, pem: bytes) -> bool:
        """Writes `pem` to `path` atomically, mode 0600; False when another process created it first."""
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(pem)
                f.flush()
                os.fsync(f.fileno())
            try:
                # A hard link never replaces an existing file, so of two processes racing on a first start
                # both end up using the first key written.
                os.link(tmp, path)
            except FileExistsError:
                return False
            except OSError:
                if path.exists():
                    return False
                os.replace(tmp, path)
            dir_fd = os.open(path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
            return True
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
