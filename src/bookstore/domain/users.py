"""Rules for user accounts: email and password checks, roles, and the signed-in Principal."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Final, Literal, cast

from bookstore.domain.errors import ValidationError

Role = Literal["customer", "author"]
ROLES: Final[tuple[Role, ...]] = ("customer", "author")

EMAIL_MAX_LENGTH: Final = 254
EMAIL_LOCAL_MAX_LENGTH: Final = 64
PASSWORD_MIN_LENGTH: Final = 8
PASSWORD_MAX_LENGTH: Final = 256
CONFIRMATION_CODE_LENGTH: Final = 6

# A practical subset of RFC 5321: dot-atom local part, and a domain of LDH labels with at least one dot.
_LOCAL_CHARS = r"[a-z0-9!#$%&'*+/=?^_`{|}~-]+"
_LABEL = r"[a-z0-9](?:[a-z0-9-]{0,61}[a-z0-9])?"
_EMAIL_RE = re.compile(rf"{_LOCAL_CHARS}(?:\.{_LOCAL_CHARS})*@{_LABEL}(?:\.{_LABEL})+")
_CODE_RE = re.compile(rf"[0-9]{{{CONFIRMATION_CODE_LENGTH}}}")


@dataclass(frozen=True)
class Principal:
    """Who made a request, as an access token proves it.

    `session_id` names the sign-in session the token belongs to (the token's `sid` claim);
    it is None for a principal that did not come from a token, such as one `add_user` returns.
    """

    user_id: str
    email: str
    role: Role
    session_id: str | None = None


def normalise_email(raw: Any) -> str:
    """The canonical form of an email address (trimmed, lowercase); raises ValidationError when invalid."""
    if not isinstance(raw, str):
        raise ValidationError("email must be a string")
    email = raw.strip().lower()
    if not email:
        raise ValidationError("email is required")
    if len(email) > EMAIL_MAX_LENGTH:
        raise ValidationError(f"email is longer than {EMAIL_MAX_LENGTH} characters")
    local, _, _ = email.partition("@")
    if len(local) > EMAIL_LOCAL_MAX_LENGTH or not _EMAIL_RE.fullmatch(email):
        raise ValidationError(f"{email!r} is not a valid email address (expected name@example.com)")
    return email


def check_password(password: Any) -> str:
    """Returns `password` when it has 8 to 256 characters; raises ValidationError otherwise."""
    if not isinstance(password, str):
        raise ValidationError("password must be a string")
    if len(password) < PASSWORD_MIN_LENGTH:
        raise ValidationError(f"password must have at least {PASSWORD_MIN_LENGTH} characters")
    if len(password) > PASSWORD_MAX_LENGTH:
        raise ValidationError(f"password must have at most {PASSWORD_MAX_LENGTH} characters")
    return password


def check_role(role: Any) -> Role:
    """Returns `role` when it is a known role; raises ValidationError otherwise."""
    if role not in ROLES:
        raise ValidationError(f"role must be one of {', '.join(ROLES)}, not {role!r}")
    return cast(Role, role)


def check_confirmation_code(code: Any) -> str:
    """Returns the trimmed code when it has the shape of a confirmation code (6 digits)."""
    if not isinstance(code, str) or not _CODE_RE.fullmatch(code.strip()):
        raise ValidationError(f"the confirmation code is {CONFIRMATION_CODE_LENGTH} digits")
    return code.strip()
