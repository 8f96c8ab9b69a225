"""Unit tests of the identity service and the user rules, on in-memory tables."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import stat
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from bookstore.domain.errors import (
    Conflict,
    Forbidden,
    NotFound,
    StorageError,
    Unauthorized,
    ValidationError,
)
from bookstore.domain.users import (
    Principal,
    check_confirmation_code,
    check_password,
    check_role,
    normalise_email,
)
from bookstore.services.identity import AUDIENCE, ISSUER, Identity
from bookstore.storage.local.keys import KeyFiles
from bookstore.storage.memory.tables import MemoryTable
from bookstore.tables import ATTEMPTS, KEYS, REVOCATIONS, SESSIONS, USERS

PASSWORD = "correct horse battery"
START_MS = 1_750_000_000_000


@dataclass
class ManualClock:
    now: int = START_MS

    def now_ms(self) -> int:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += int(seconds * 1000)


@dataclass
class Region:
    """One region's identity service, its tables, clock and the confirmation codes it sent."""

    identity: Identity
    users: MemoryTable
    keys: MemoryTable
    sessions: MemoryTable
    clock: ManualClock
    key_dir: Path
    codes: dict[str, str] = field(default_factory=dict)
    revocations: MemoryTable = field(default_factory=lambda: MemoryTable(REVOCATIONS))
    attempts: MemoryTable = field(default_factory=lambda: MemoryTable(ATTEMPTS))


def new_identity(
    users: MemoryTable,
    keys: MemoryTable,
    sessions: MemoryTable,
    *,
    region: str,
    key_dir: Path,
    clock: ManualClock,
    on_code: Callable[[str, str], None] | None = None,
    revocations: MemoryTable | None = None,
    attempts: MemoryTable | None = None,
) -> Identity:
    # The cheapest argon2 parameters: these tests check behaviour, not hashing strength.
    return Identity(
        users,
        keys,
        sessions,
        revocations=revocations if revocations is not None else MemoryTable(REVOCATIONS, clock=clock),
        attempts=attempts if attempts is not None else MemoryTable(ATTEMPTS, clock=clock),
        region=region,
        signing_keys=KeyFiles(key_dir),
        clock=clock,
        on_code=on_code,
        argon2_time_cost=1,
        argon2_memory_cost=8,
        argon2_parallelism=1,
    )


def make_region(
    tmp_path: Path,
    region: str = "eu-west-1",
    *,
    keys: MemoryTable | None = None,
    key_dir: Path | None = None,
    clock: ManualClock | None = None,
) -> Region:
    clock = clock or ManualClock()
    codes: dict[str, str] = {}
    users, sessions = MemoryTable(USERS, clock=clock), MemoryTable(SESSIONS, clock=clock)
    keys = keys if keys is not None else MemoryTable(KEYS, clock=clock)
    key_dir = key_dir or tmp_path / region / "keys"
    revocations, attempts = MemoryTable(REVOCATIONS, clock=clock), MemoryTable(ATTEMPTS, clock=clock)
    identity = new_identity(
        users,
        keys,
        sessions,
        region=region,
        key_dir=key_dir,
        clock=clock,
        on_code=codes.__setitem__,
        revocations=revocations,
        attempts=attempts,
    )
    return Region(identity, users, keys, sessions, clock, key_dir, codes, revocations, attempts)


@pytest.fixture
def eu(tmp_path: Path) -> Region:
    return make_region(tmp_path)


def signed_up(r: Region, email: str = "ada@example.com") -> str:
    r.identity.signup(email, PASSWORD)
    r.identity.confirm(email, r.codes[email])
    return email


def b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def b64url_json(obj: Any) -> str:
    return b64url(json.dumps(obj, separators=(",", ":")).encode())


def b64url_decode_json(part: str) -> dict[str, Any]:
    decoded: dict[str, Any] = json.loads(base64.urlsafe_b64decode(part + "=" * (-len(part) % 4)))
    return decoded


def token_parts(token: str) -> tuple[dict[str, Any], dict[str, Any], str]:
    header, payload, signature = token.split(".")
    return b64url_decode_json(header), b64url_decode_json(payload), signature


def private_key_of(r: Region) -> Ed25519PrivateKey:
    (path,) = r.key_dir.glob("*.pem")
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    assert isinstance(key, Ed25519PrivateKey)
    return key


def valid_claims(r: Region, **overrides: Any) -> dict[str, Any]:
    now_s = r.clock.now_ms() // 1000
    claims: dict[str, Any] = {
        "iss": ISSUER,
        "aud": AUDIENCE,
        "sub": "0" * 32,
        "email": "ada@example.com",
        "role": "customer",
        "sid": "1" * 32,
        "iat": now_s,
        "exp": now_s + 600,
        "region": "eu-west-1",
    }
    claims.update(overrides)
    return {k: v for k, v in claims.items() if v is not None}


def sign(
    r: Region, claims: dict[str, Any], key: Ed25519PrivateKey | None = None, kid: str | None = None
) -> str:
    return jwt.encode(
        claims, key or private_key_of(r), algorithm="EdDSA", headers={"kid": kid or r.identity.kid}
    )


# ----- domain rules -----------------------------------------------------------------------------------------


def test_email_is_trimmed_and_lowercased() -> None:
    assert normalise_email("  Ada.Lovelace+books@Example.CO.uk \n") == "ada.lovelace+books@example.co.uk"


@pytest.mark.parametrize(
    "raw",
    [
        "",
        "   ",
        "ada",
        "ada@",
        "@example.com",
        "ada@example",
        "ada@@example.com",
        "a da@example.com",
        ".ada@example.com",
        "ada.@example.com",
        "a..da@example.com",
        "ada@-example.com",
        "ada@example..com",
        "ada@exa_mple.com",
        "ada@example.com\x00",
        "a" * 65 + "@example.com",
        "a@" + ".".join(["b" * 60] * 4) + ".bookstore",  # 255 characters
        None,
        42,
    ],
)
def test_invalid_emails_are_refused(raw: Any) -> None:
    with pytest.raises(ValidationError):
        normalise_email(raw)


def test_longest_valid_email_is_accepted() -> None:
    email = "a" * 64 + "@" + ".".join(["b" * 61] * 3) + ".cde"
    assert len(email) == 254
    assert normalise_email(email) == email
    with pytest.raises(ValidationError, match="254"):
        normalise_email(email + "f")


def test_password_length_rules() -> None:
    assert check_password("x" * 8) == "x" * 8
    assert check_password("x" * 256) == "x" * 256
    with pytest.raises(ValidationError, match="at least 8"):
        check_password("x" * 7)
    with pytest.raises(ValidationError, match="at most 256"):
        check_password("x" * 257)
    with pytest.raises(ValidationError, match="string"):
        check_password(12345678)


def test_roles_and_codes() -> None:
    assert check_role("customer") == "customer"
    assert check_role("author") == "author"
    with pytest.raises(ValidationError, match="customer, author"):
        check_role("admin")
    assert check_confirmation_code(" 012345 ") == "012345"
    for bad in ["12345", "1234567", "12a456", "", None, "١٢٣٤٥٦"]:
        with pytest.raises(ValidationError, match="6 digits"):
            check_confirmation_code(bad)


# ----- accounts ---------------------------------------------------------------------------------------------


def test_signup_confirm_signin_verify(eu: Region) -> None:
    eu.identity.signup("  Ada@Example.com ", PASSWORD)
    code = eu.codes["ada@example.com"]
    assert len(code) == 6 and code.isdigit()

    stored = eu.users.get({"email": "ada@example.com"})
    assert stored is not None
    assert stored["confirmed"] is False and stored["role"] == "customer"
    assert len(stored["userId"]) == 32
    assert stored["passwordHash"].startswith("$argon2id$")
    assert PASSWORD not in json.dumps(stored)

    eu.identity.confirm("ADA@example.com", code)
    stored = eu.users.get({"email": "ada@example.com"})
    assert stored is not None and stored["confirmed"] is True
    # The code is kept, so that a retry of it answers alike (and no other code does).
    assert stored["confirmationCode"] == code

    tokens = eu.identity.signin("ada@example.com", PASSWORD)
    assert set(tokens) == {"accessToken", "refreshToken", "expiresIn"}
    assert tokens["expiresIn"] == 900
    assert "argon2" not in json.dumps(tokens)

    principal = eu.identity.verify(tokens["accessToken"])
    assert principal == Principal(
        user_id=stored["userId"],
        email="ada@example.com",
        role="customer",
        session_id=tokens["refreshToken"].split(".")[0],
    )
    header, claims, _ = token_parts(tokens["accessToken"])
    assert header["alg"] == "EdDSA" and header["kid"] == "eu-west-1-1"
    assert claims["iss"] == "bookstore" and claims["aud"] == "bookstore-api"
    assert claims["region"] == "eu-west-1"
    assert claims["exp"] - claims["iat"] == 900
    assert claims["iat"] == START_MS // 1000


def test_session_item_holds_only_a_hash_of_the_refresh_secret(eu: Region) -> None:
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    session_id, secret = tokens["refreshToken"].split(".")
    session = eu.sessions.get({"sessionId": session_id})
    assert session is not None
    assert secret not in json.dumps(session)
    assert session["secretHash"] == hashlib.sha256(secret.encode()).hexdigest()
    assert session["revoked"] is False
    assert session["expiresMs"] == START_MS + 2_592_000 * 1000
    user = eu.users.get({"email": email})
    assert user is not None and session["userId"] == user["userId"]


def test_duplicate_signup_answers_alike_keeps_the_first_account_and_sends_no_code(eu: Region) -> None:
    eu.identity.signup("ada@example.com", PASSWORD)
    first = eu.users.get({"email": "ada@example.com"})
    sent = dict(eu.codes)
    eu.identity.signup(" ADA@example.com", "another password")  # no error: existence is not revealed
    assert eu.users.get({"email": "ada@example.com"}) == first and eu.codes == sent


def test_signup_validates_input(eu: Region) -> None:
    with pytest.raises(ValidationError, match="valid email"):
        eu.identity.signup("not-an-email", PASSWORD)
    with pytest.raises(ValidationError, match="at least 8"):
        eu.identity.signup("ada@example.com", "short")
    assert eu.users.scan().items == []
    assert eu.codes == {}


def test_confirm_errors(eu: Region) -> None:
    eu.identity.signup("ada@example.com", PASSWORD)
    code = eu.codes["ada@example.com"]
    wrong = f"{(int(code) + 1) % 1_000_000:06d}"
    with pytest.raises(ValidationError, match="wrong confirmation code"):
        eu.identity.confirm("ada@example.com", wrong)
    with pytest.raises(ValidationError, match="6 digits"):
        eu.identity.confirm("ada@example.com", "abc")
    with pytest.raises(ValidationError, match="wrong confirmation code"):  # as for an existing account
        eu.identity.confirm("nobody@example.com", code)
    user = eu.users.get({"email": "ada@example.com"})
    assert user is not None and user["confirmed"] is False

    eu.identity.confirm("ada@example.com", code)
    eu.identity.confirm("ada@example.com", code)  # idempotent
    user = eu.users.get({"email": "ada@example.com"})
    assert user is not None and user["confirmed"] is True


def test_confirmation_code_for_operators(eu: Region) -> None:
    eu.identity.signup("ada@example.com", PASSWORD)
    assert eu.identity.confirmation_code("Ada@Example.com") == eu.codes["ada@example.com"]
    with pytest.raises(NotFound):
        eu.identity.confirmation_code("nobody@example.com")
    eu.identity.confirm("ada@example.com", eu.codes["ada@example.com"])
    with pytest.raises(Conflict, match="already confirmed"):
        eu.identity.confirmation_code("ada@example.com")


def test_add_user_creates_a_confirmed_account_with_a_role(eu: Region) -> None:
    principal = eu.identity.add_user("Writer@Example.com", PASSWORD, role="author")
    assert principal.email == "writer@example.com" and principal.role == "author"
    assert principal.session_id is None
    tokens = eu.identity.signin("writer@example.com", PASSWORD)
    verified = eu.identity.verify(tokens["accessToken"])
    assert (verified.user_id, verified.role) == (principal.user_id, "author")
    with pytest.raises(Conflict):
        eu.identity.add_user("writer@example.com", PASSWORD)
    with pytest.raises(ValidationError, match="role"):
        eu.identity.add_user("admin@example.com", PASSWORD, role="admin")
    assert eu.users.get({"email": "admin@example.com"}) is None
    assert eu.codes == {}


# ----- sign-in ----------------------------------------------------------------------------------------------


def test_wrong_password_and_unknown_email_look_the_same(eu: Region) -> None:
    email = signed_up(eu)
    with pytest.raises(Unauthorized) as wrong_password:
        eu.identity.signin(email, "wrong password")
    assert eu.identity._passwords._dummy_hash is None
    with pytest.raises(Unauthorized) as unknown_email:
        eu.identity.signin("nobody@example.com", PASSWORD)
    assert wrong_password.value.message == unknown_email.value.message == "wrong email or password"
    # The unknown email still cost one argon2 verification, against a dummy hash with the same parameters.
    assert eu.identity._passwords._dummy_hash is not None and eu.identity._passwords._dummy_hash.startswith(
        "$argon2id$v=19$m=8,t=1"
    )
    with pytest.raises(Unauthorized, match="wrong email or password"):
        eu.identity.signin(email, "x" * 10_000)
    assert eu.sessions.scan().items == []


def test_unconfirmed_account_cannot_sign_in(eu: Region) -> None:
    eu.identity.signup("ada@example.com", PASSWORD)
    with pytest.raises(Forbidden, match="confirm your email with the code first"):
        eu.identity.signin("ada@example.com", PASSWORD)
    # Without the right password the account's state stays hidden.
    with pytest.raises(Unauthorized):
        eu.identity.signin("ada@example.com", "wrong password")
    assert eu.sessions.scan().items == []


def test_signin_upgrades_a_hash_made_with_older_parameters(tmp_path: Path) -> None:
    old = make_region(tmp_path)
    email = signed_up(old)
    newer = Identity(
        old.users,
        old.keys,
        old.sessions,
        revocations=old.revocations,
        attempts=old.attempts,
        region="eu-west-1",
        signing_keys=KeyFiles(old.key_dir),
        clock=old.clock,
        argon2_time_cost=2,
        argon2_memory_cost=16,
        argon2_parallelism=1,
    )
    newer.signin(email, PASSWORD)
    user = old.users.get({"email": email})
    assert user is not None and user["passwordHash"].startswith("$argon2id$v=19$m=16,t=2")
    newer.signin(email, PASSWORD)


# ----- refresh and sign-out ---------------------------------------------------------------------------------


def test_refresh_issues_a_new_access_token_for_the_same_session(eu: Region) -> None:
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    eu.clock.advance(901)
    with pytest.raises(Unauthorized, match="expired"):
        eu.identity.verify(tokens["accessToken"])
    refreshed = eu.identity.refresh(tokens["refreshToken"])
    assert refreshed["refreshToken"] != tokens["refreshToken"]  # rotated on every use
    assert refreshed["refreshToken"].split(".")[0] == tokens["refreshToken"].split(".")[0]
    assert refreshed["expiresIn"] == 900
    principal = eu.identity.verify(refreshed["accessToken"])
    assert principal.session_id == tokens["refreshToken"].split(".")[0]
    assert principal.email == email


def test_signout_revokes_refresh_but_not_issued_access_tokens(eu: Region) -> None:
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    other = eu.identity.signin(email, PASSWORD)
    principal = eu.identity.verify(tokens["accessToken"])
    assert principal.session_id is not None
    eu.identity.signout(principal.session_id)
    eu.identity.signout(principal.session_id)  # idempotent

    with pytest.raises(Unauthorized, match="signed out"):
        eu.identity.refresh(tokens["refreshToken"])
    # Like Cognito: the access token stays valid until it expires.
    assert eu.identity.verify(tokens["accessToken"]) == principal
    # Other sessions of the same user are untouched.
    assert eu.identity.verify(eu.identity.refresh(other["refreshToken"])["accessToken"]).email == email


def test_signout_of_a_session_not_here_yet_records_its_revocation(eu: Region) -> None:
    eu.identity.signout("f" * 32)
    assert eu.sessions.scan().items == []
    assert [r["sessionId"] for r in eu.revocations.scan().items] == ["f" * 32]
    with pytest.raises(ValidationError):
        eu.identity.signout("")


def test_a_spent_refresh_token_presented_again_revokes_the_whole_session(eu: Region) -> None:
    email = signed_up(eu)
    first = eu.identity.signin(email, PASSWORD)["refreshToken"]
    second = eu.identity.refresh(first)["refreshToken"]
    third = eu.identity.refresh(second)["refreshToken"]
    # The first token, spent, comes back (stolen, or replayed): the session is revoked for its holders.
    with pytest.raises(Unauthorized, match="used before"):
        eu.identity.refresh(first)
    with pytest.raises(Unauthorized, match="signed out"):
        eu.identity.refresh(third)
    (revocation,) = eu.revocations.scan().items
    assert revocation["sessionId"] == first.split(".")[0] and revocation["reason"] == "reuse"


def test_a_token_rotated_in_two_regions_at_once_revokes_the_session_when_the_lost_branch_comes_back(
    tmp_path: Path,
) -> None:
    # Issue 12 item 3: both regions rotate the same refresh token within the replication lag (the user in
    # one, a thief in the other). Last-writer-wins keeps Ireland's rotation; Singapore's secret is neither
    # current nor in the kept `spent` list, and must still be caught as reuse, not refused as unknown.
    eu, ap = make_region(tmp_path, "eu-west-1"), make_region(tmp_path, "ap-southeast-1")
    email = signed_up(eu)
    first = eu.identity.signin(email, PASSWORD)["refreshToken"]
    session_id = first.split(".")[0]
    for table in ("users", "sessions"):
        for item in getattr(eu, table).scan().items:
            getattr(ap, table).put(item)
    kept = eu.identity.refresh(first)["refreshToken"]
    lost = ap.identity.refresh(first)["refreshToken"]
    (winner,) = eu.sessions.scan().items
    ap.sessions.put(winner)  # the session's two versions converge on Ireland's
    with pytest.raises(Unauthorized, match="used before"):
        ap.identity.refresh(lost)
    for item in ap.revocations.scan().items:
        eu.revocations.put(item)
    for region in (eu, ap):
        with pytest.raises(Unauthorized, match="signed out"):
            region.identity.refresh(kept)
    (revocation,) = eu.revocations.scan().items
    assert revocation["sessionId"] == session_id and revocation["reason"] == "reuse"


def test_a_guessed_refresh_secret_is_refused_without_revoking_the_session(eu: Region) -> None:
    # The tag that marks a secret as issued for the session cannot be made without the session's chain
    # key: a guess of the right shape is just invalid, so nobody can sign a user out by guessing.
    email = signed_up(eu)
    first = eu.identity.signin(email, PASSWORD)["refreshToken"]
    session_id, _, secret = first.partition(".")
    forged = f"{session_id}.{'A' * len(secret)}"
    with pytest.raises(Unauthorized, match="invalid refresh token"):
        eu.identity.refresh(forged)
    assert eu.revocations.scan().items == []
    assert eu.identity.refresh(first)["refreshToken"]


def test_a_signout_made_before_the_session_arrived_sticks_in_both_regions(tmp_path: Path) -> None:
    # Issue 12 item 3: the session is signed in in Ireland, signed out in Singapore before it arrived.
    eu, ap = make_region(tmp_path, "eu-west-1"), make_region(tmp_path, "ap-southeast-1")
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    session_id = tokens["refreshToken"].split(".")[0]
    ap.identity.signout(session_id)  # Singapore has no such session yet
    # Replication delivers each table's items, in any order: here the session after the revocation.
    for table in ("users", "sessions", "revocations"):
        for source, target in ((eu, ap), (ap, eu)):
            for item in getattr(source, table).scan().items:
                getattr(target, table).put(item)
    for region in (eu, ap):
        with pytest.raises(Unauthorized, match="signed out"):
            region.identity.refresh(tokens["refreshToken"])
    # A later write of the session (a rotation elsewhere, a repair) cannot bring it back.
    eu.sessions.update({"sessionId": session_id}, {"revoked": False})
    with pytest.raises(Unauthorized, match="signed out"):
        eu.identity.refresh(tokens["refreshToken"])


def test_refresh_after_the_session_expired(eu: Region) -> None:
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    eu.clock.advance(2_592_000 - 1)
    rotated = eu.identity.refresh(tokens["refreshToken"])
    eu.clock.advance(1)
    with pytest.raises(Unauthorized, match="expired"):
        eu.identity.refresh(rotated["refreshToken"])


def test_refresh_rejects_bad_tokens(eu: Region) -> None:
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    session_id, secret = tokens["refreshToken"].split(".")
    bad = [
        "",
        "garbage",
        ".",
        f"{session_id}.",
        f".{secret}",
        f"{session_id}.{secret[:-1]}",
        f"{session_id}.{secret}x",
        f"{'0' * 32}.{secret}",
        f"{session_id.upper()}.{secret}",
        tokens["accessToken"],
        "x" * 100_000,
        None,
    ]
    for token in bad:
        with pytest.raises(Unauthorized):
            eu.identity.refresh(token)
    assert eu.identity.refresh(tokens["refreshToken"])["refreshToken"] != tokens["refreshToken"]


def test_refresh_fails_once_the_account_is_gone(eu: Region) -> None:
    email = signed_up(eu)
    tokens = eu.identity.signin(email, PASSWORD)
    eu.users.delete({"email": email})
    eu.identity.add_user(email, PASSWORD)  # same email, a different account
    with pytest.raises(Unauthorized, match="no longer exists"):
        eu.identity.refresh(tokens["refreshToken"])


# ----- access tokens ----------------------------------------------------------------------------------------


@pytest.fixture
def session(eu: Region) -> dict[str, Any]:
    return eu.identity.signin(signed_up(eu), PASSWORD)


def test_access_token_expires_by_the_injected_clock(eu: Region, session: dict[str, Any]) -> None:
    eu.clock.advance(899.999)
    eu.identity.verify(session["accessToken"])
    eu.clock.advance(0.001)
    with pytest.raises(Unauthorized, match="expired"):
        eu.identity.verify(session["accessToken"])


def test_forged_signature_with_the_same_kid(eu: Region, session: dict[str, Any]) -> None:
    _, claims, _ = token_parts(session["accessToken"])
    forged = sign(eu, {**claims, "role": "author"}, key=Ed25519PrivateKey.generate())
    with pytest.raises(Unauthorized, match="signature is invalid"):
        eu.identity.verify(forged)
    # Even long after the key was cached (when the table is re-read), the forgery fails.
    eu.clock.advance(60)
    with pytest.raises(Unauthorized, match="signature is invalid"):
        eu.identity.verify(sign(eu, valid_claims(eu), key=Ed25519PrivateKey.generate()))


def test_alg_none_is_refused(eu: Region, session: dict[str, Any]) -> None:
    header, claims, _ = token_parts(session["accessToken"])
    for alg in ["none", "None", "NONE"]:
        unsigned = f"{b64url_json({**header, 'alg': alg})}.{b64url_json(claims)}."
        with pytest.raises(Unauthorized, match="not accepted"):
            eu.identity.verify(unsigned)


def test_hs256_signed_with_the_public_key_is_refused(eu: Region, session: dict[str, Any]) -> None:
    _, claims, _ = token_parts(session["accessToken"])
    public = private_key_of(eu).public_key()
    secrets_tried = [
        public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw),
        public.public_bytes(serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo),
        eu.identity.jwks()["keys"][0]["x"].encode(),
    ]
    header = {"alg": "HS256", "typ": "JWT", "kid": eu.identity.kid}
    for secret in secrets_tried:
        signing_input = f"{b64url_json(header)}.{b64url_json(claims)}"
        mac = hmac.new(secret, signing_input.encode(), hashlib.sha256).digest()
        with pytest.raises(Unauthorized, match="'HS256' is not accepted"):
            eu.identity.verify(f"{signing_input}.{b64url(mac)}")


def test_tampered_payload_is_refused(eu: Region, session: dict[str, Any]) -> None:
    header_b64, _, signature = session["accessToken"].split(".")
    _, claims, _ = token_parts(session["accessToken"])
    for change in [{"role": "author"}, {"exp": claims["exp"] + 3600}, {"sub": "f" * 32}]:
        tampered = f"{header_b64}.{b64url_json({**claims, **change})}.{signature}"
        with pytest.raises(Unauthorized, match="signature is invalid"):
            eu.identity.verify(tampered)


def test_tampered_header_is_refused(eu: Region, session: dict[str, Any]) -> None:
    header, _, _ = token_parts(session["accessToken"])
    _, payload_b64, signature = session["accessToken"].split(".")
    tampered = f"{b64url_json({**header, 'typ': 'at+jwt'})}.{payload_b64}.{signature}"
    with pytest.raises(Unauthorized, match="signature is invalid"):
        eu.identity.verify(tampered)


@pytest.mark.parametrize(
    ("override", "message"),
    [
        ({"aud": "someone-else"}, "not meant for bookstore-api"),
        ({"aud": None}, "lacks the 'aud' claim"),
        ({"iss": "evil"}, "not issued by bookstore"),
        ({"sub": None}, "lacks the 'sub' claim"),
        ({"email": None}, "lacks the 'email' claim"),
        ({"role": None}, "lacks the 'role' claim"),
        ({"sid": None}, "lacks the 'sid' claim"),
        ({"exp": None}, "lacks the 'exp' claim"),
        ({"iat": None}, "lacks the 'iat' claim"),
        ({"region": None}, "lacks the 'region' claim"),
        ({"role": "admin"}, "unknown role"),
        ({"email": ""}, "malformed 'email'"),
        ({"sid": 7}, "malformed 'sid'"),
        ({"exp": "tomorrow"}, "malformed time claims"),
        ({"exp": True}, "malformed time claims"),
    ],
)
def test_properly_signed_tokens_with_bad_claims_are_refused(
    eu: Region, session: dict[str, Any], override: dict[str, Any], message: str
) -> None:
    token = sign(eu, valid_claims(eu, **override))
    with pytest.raises(Unauthorized, match=message):
        eu.identity.verify(token)


def test_token_signed_by_the_real_key_with_valid_claims_passes(eu: Region, session: dict[str, Any]) -> None:
    # The control for the test above: the crafting itself is sound.
    assert eu.identity.verify(sign(eu, valid_claims(eu))).user_id == "0" * 32


def test_unknown_or_missing_kid_is_refused(eu: Region, session: dict[str, Any]) -> None:
    _, claims, _ = token_parts(session["accessToken"])
    with pytest.raises(Unauthorized, match="unknown key 'mars-1'"):
        eu.identity.verify(sign(eu, claims, kid="mars-1"))
    no_kid = jwt.encode(claims, private_key_of(eu), algorithm="EdDSA")
    with pytest.raises(Unauthorized, match="no key id"):
        eu.identity.verify(no_kid)


@pytest.mark.parametrize(
    "garbage",
    [
        "",
        "garbage",
        "a.b",
        "a.b.c",
        "...",
        "eyJhbGciOiJFZERTQSJ9.e30.",
        "Bearer x.y.z",
        b64url(b"[1,2]") + ".e30.",
        "x" * 10_000,
        "é.é.é",
        None,
        123,
    ],
)
def test_garbage_is_refused(eu: Region, session: dict[str, Any], garbage: Any) -> None:
    with pytest.raises(Unauthorized):
        eu.identity.verify(garbage)


# ----- keys and regions -------------------------------------------------------------------------------------


def test_private_key_is_persisted_with_mode_0600_and_reused(tmp_path: Path) -> None:
    first = make_region(tmp_path)
    tokens = first.identity.signin(signed_up(first), PASSWORD)
    files = list(first.key_dir.iterdir())
    assert [f.name for f in files] == ["eu-west-1-1.pem"]  # no temporary files left behind
    assert stat.S_IMODE(files[0].stat().st_mode) == 0o600
    pem = files[0].read_bytes()

    # A restart: a new service on the same key directory and tables signs with the same key.
    again = new_identity(
        first.users, first.keys, first.sessions, region="eu-west-1", key_dir=first.key_dir, clock=first.clock
    )
    assert again.ensure_signing_key() == "eu-west-1-1"
    assert files[0].read_bytes() == pem
    assert again.verify(tokens["accessToken"]).email == "ada@example.com"
    second = again.signin("ada@example.com", PASSWORD)
    assert first.identity.verify(second["accessToken"]).email == "ada@example.com"
    assert len(first.keys.scan().items) == 1


def test_keys_table_holds_no_private_material(eu: Region) -> None:
    eu.identity.ensure_signing_key()
    (item,) = eu.keys.scan().items
    private = private_key_of(eu).private_bytes(
        serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
    )
    assert "d" not in item
    assert b64url(private) not in json.dumps(item)
    assert item["region"] == "eu-west-1"


def test_jwks_shape(tmp_path: Path) -> None:
    clock = ManualClock()
    keys = MemoryTable(KEYS, clock=clock)
    eu = make_region(tmp_path, "eu-west-1", keys=keys, clock=clock)
    ap = make_region(tmp_path, "ap-southeast-1", keys=keys, clock=clock)
    assert [k["kid"] for k in eu.identity.jwks()["keys"]] == ["eu-west-1-1"]
    jwks = ap.identity.jwks()
    assert [k["kid"] for k in jwks["keys"]] == ["ap-southeast-1-1", "eu-west-1-1"]
    for jwk in jwks["keys"]:
        assert set(jwk) == {"kty", "crv", "x", "kid", "alg", "use"}
        assert (jwk["kty"], jwk["crv"], jwk["alg"], jwk["use"]) == ("OKP", "Ed25519", "EdDSA", "sig")
        assert len(base64.urlsafe_b64decode(jwk["x"] + "=")) == 32
    # Any JOSE library can verify our tokens with the published JWK alone.
    tokens = eu.identity.signin(signed_up(eu), PASSWORD)
    public = jwt.PyJWK(jwks["keys"][1]).key
    claims = jwt.decode(
        tokens["accessToken"],
        public,
        algorithms=["EdDSA"],
        audience="bookstore-api",
        options={"verify_exp": False, "verify_iat": False},  # the token's times follow the test clock
    )
    assert claims["email"] == "ada@example.com"


def test_token_issued_in_one_region_verifies_in_another_once_keys_replicate(tmp_path: Path) -> None:
    eu = make_region(tmp_path, "eu-west-1")
    ap = make_region(tmp_path, "ap-southeast-1")
    tokens = eu.identity.signin(signed_up(eu), PASSWORD)
    ap.identity.ensure_signing_key()

    with pytest.raises(Unauthorized, match="unknown key 'eu-west-1-1'"):
        ap.identity.verify(tokens["accessToken"])

    # Replication of the KEYS table, item by item (what the table replicator does).
    for item in eu.keys.scan().items:
        ap.keys.put(item)
    principal = ap.identity.verify(tokens["accessToken"])
    assert principal.email == "ada@example.com"
    assert principal.user_id == eu.identity.verify(tokens["accessToken"]).user_id
    assert token_parts(tokens["accessToken"])[1]["region"] == "eu-west-1"
    assert ap.key_dir != eu.key_dir and not list(ap.key_dir.glob("eu-west-1*"))


def test_token_from_a_region_whose_clock_runs_ahead_verifies(tmp_path: Path) -> None:
    clock = ManualClock()
    keys = MemoryTable(KEYS, clock=clock)
    ahead = ManualClock(START_MS + 120_000)
    eu = make_region(tmp_path, "eu-west-1", keys=keys, clock=ahead)
    ap = make_region(tmp_path, "ap-southeast-1", keys=keys, clock=clock)
    tokens = eu.identity.signin(signed_up(eu), PASSWORD)
    assert ap.identity.verify(tokens["accessToken"]).email == "ada@example.com"


def test_replaced_key_is_picked_up_by_other_regions(tmp_path: Path) -> None:
    clock = ManualClock()
    keys = MemoryTable(KEYS, clock=clock)
    eu = make_region(tmp_path, "eu-west-1", keys=keys, clock=clock)
    ap = make_region(tmp_path, "ap-southeast-1", keys=keys, clock=clock)
    email = signed_up(eu)
    old = eu.identity.signin(email, PASSWORD)
    assert ap.identity.verify(old["accessToken"]).email == email  # ap caches eu's key

    # eu loses its key file and starts again: a new key under the same kid replaces the published one.
    (eu.key_dir / "eu-west-1-1.pem").unlink()
    restarted = new_identity(eu.users, keys, eu.sessions, region="eu-west-1", key_dir=eu.key_dir, clock=clock)
    published = keys.get({"kid": "eu-west-1-1"})
    new = restarted.signin(email, PASSWORD)
    replaced = keys.get({"kid": "eu-west-1-1"})
    assert published is not None and replaced is not None and replaced["x"] != published["x"]
    with pytest.raises(Unauthorized, match="signature is invalid"):
        restarted.verify(old["accessToken"])

    clock.advance(31)
    assert ap.identity.verify(new["accessToken"]).email == email
    with pytest.raises(Unauthorized, match="signature is invalid"):
        ap.identity.verify(old["accessToken"])


def test_corrupt_key_file_is_a_storage_error(tmp_path: Path) -> None:
    key_dir = tmp_path / "keys"
    key_dir.mkdir()
    (key_dir / "eu-west-1-1.pem").write_text("not a key")
    r = make_region(tmp_path, key_dir=key_dir)
    with pytest.raises(StorageError, match=r"eu-west-1-1\.pem"):
        r.identity.ensure_signing_key()


def test_a_remembered_token_still_expires(tmp_path: Path) -> None:
    clock = ManualClock()
    region = make_region(tmp_path, clock=clock)
    email = signed_up(region)
    token = region.identity.signin(email, PASSWORD)["accessToken"]
    assert region.identity.verify(token).email == email
    assert region.identity.verify(token).email == email  # served from the verified-token cache
    clock.advance(901)
    with pytest.raises(Unauthorized, match="expired"):
        region.identity.verify(token)
