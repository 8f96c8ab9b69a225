"""Access tokens: this region's signing key (in a SigningKeyStore), EdDSA JWTs, their checks, JWKS."""

from __future__ import annotations

import base64
import logging
import threading
from collections import OrderedDict
from dataclasses import dataclass
from typing import Any, Final

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey

from bookstore.domain.errors import Unauthorized
from bookstore.domain.users import ROLES, Principal, check_role
from bookstore.ports import Clock, Item, SigningKeyStore, Table

log = logging.getLogger(__name__)

ISSUER: Final = "bookstore"
AUDIENCE: Final = "bookstore-api"
ALGORITHM: Final = "EdDSA"
REQUIRED_CLAIMS: Final = ("sub", "email", "role", "sid", "iat", "exp", "iss", "aud", "region")

# Longer strings are refused before any parsing: no token this service issues comes near this size.
_MAX_ACCESS_TOKEN: Final = 4096
# Verified tokens remembered (least recently verified forgotten first).
_VERIFIED_TOKENS = 10_000
# A cached public key is re-read from the keys table at most this often after a signature fails with it,
# so a region that had to replace its key (same kid) is picked up without a restart, and forged tokens
# cannot turn every request into a table read.
_KEY_RECHECK_MS: Final = 30_000


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


def _public_jwk(kid: str, x: str) -> dict[str, str]:
    return {"kty": "OKP", "crv": "Ed25519", "x": x, "kid": kid, "alg": ALGORITHM, "use": "sig"}


class Tokens:
    """Issues and verifies access tokens; publishes this region's public key in the KEYS table.

    KEYS (key `kid`) holds public signing keys as JWKs. Each region signs with its own Ed25519 key, kept
    in `signing_keys` and never in a table; because verification needs only the public key named by the
    token's `kid`, a token issued in any region verifies in every region that has received the KEYS table.
    """

    def __init__(
        self, keys: Table, signing_keys: SigningKeyStore, *, region: str, clock: Clock, access_ttl: int
    ) -> None:
        self._keys = keys
        self._signing_keys = signing_keys
        self._region = region
        self._clock = clock
        self._access_ttl = access_ttl
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

    @property
    def access_ttl(self) -> int:
        """Seconds an access token lives."""
        return self._access_ttl

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

    def issue(self, user: Item, email: str, session_id: str) -> str:
        """A signed access token for `user` (signed in as `email`) in session `session_id`."""
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
                signer = _SigningKey(kid=self.kid, private=self._signing_keys.load_or_create(self.kid))
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
