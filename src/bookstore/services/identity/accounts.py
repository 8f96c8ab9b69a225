"""Accounts: sign-up, confirmation codes (expiring, void after wrong tries), operators' accounts."""

from __future__ import annotations

import contextlib
import hmac
import logging
import secrets
import uuid
from collections.abc import Callable
from typing import Final

from bookstore.domain.errors import (
    ConditionFailed,
    Conflict,
    NotFound,
    TooManyRequests,
    Unauthorized,
    ValidationError,
)
from bookstore.domain.users import (
    PASSWORD_MAX_LENGTH,
    Principal,
    check_confirmation_code,
    check_password,
    check_role,
    normalise_email,
)
from bookstore.ports import AttributeEquals, Clock, Item, ItemAbsent, Table
from bookstore.services.attempts import FOREVER, Attempts, Limit
from bookstore.services.identity.passwords import Passwords

log = logging.getLogger(__name__)

WRONG_CREDENTIALS: Final = "wrong email or password"
WRONG_CODE: Final = "wrong confirmation code; check the code you were sent"


# A confirmation code lives this long and allows this many wrong tries (counted in every region);
# then a new one is asked for with `resend_code` (POST /auth/resend-code).
CODE_TTL_MS: Final = 24 * 3600 * 1000
CODE_TRIES = Limit("wrong confirmation codes", 5, FOREVER, keep_s=CODE_TTL_MS // 1000)
RESENDS = Limit("confirmation codes asked for", 5, 3600)


class Accounts:
    """User accounts in the USERS table (key `email`): userId, argon2 passwordHash, role, confirmed, and
    while unconfirmed the confirmationCode with its codeId and codeIssuedMs. Wrong codes and requests
    for new ones are counted in `attempts`, in every region.
    """

    def __init__(
        self,
        users: Table,
        attempts: Attempts,
        passwords: Passwords,
        *,
        region: str,
        clock: Clock,
        on_code: Callable[[str, str], None] | None = None,
    ) -> None:
        self._users = users
        self._attempts = attempts
        self._passwords = passwords
        self._region = region
        self._clock = clock
        self._on_code = on_code

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
            "passwordHash": self._passwords.hash(password),
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
        self._attempts.reserve([(f"resend:{email}", RESENDS)])
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
        # The try is counted before the code is compared (and given back when it is right), so concurrent
        # wrong tries cannot pass the limit by the number in flight.
        try:
            reservation = self._attempts.reserve([(f"confirm:{email}:{code_id}", CODE_TRIES)])
        except TooManyRequests:
            raise ValidationError(
                f"this confirmation code is void after {CODE_TRIES.most} wrong tries; "
                "ask for a new one (POST /auth/resend-code)"
            ) from None
        stored = None if user is None else user.get("confirmationCode")
        if not isinstance(stored, str) or not hmac.compare_digest(stored.encode(), code.encode()):
            raise ValidationError(WRONG_CODE)
        self._attempts.release(reservation)
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
            "passwordHash": self._passwords.hash(password),
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
    def get(self, email: str) -> Item | None:
        """The account of a normalised `email`, or None."""
        return self._users.get({"email": email})

    def checked_password(self, email: str, password: str) -> Item:
        """The account of `email` when `password` is its password; Unauthorized (after equal work) if not."""
        if not isinstance(password, str) or len(password) > PASSWORD_MAX_LENGTH:
            # No account can have such a password; refusing before hashing bounds the work per request.
            raise Unauthorized(WRONG_CREDENTIALS)
        user = self._users.get({"email": email})
        if user is None:
            self._passwords.match_nothing(password)
            raise Unauthorized(WRONG_CREDENTIALS)
        stored = user.get("passwordHash")
        if not isinstance(stored, str) or not self._passwords.matches(stored, password):
            raise Unauthorized(WRONG_CREDENTIALS)
        return user

    def _new_code(self) -> Item:
        """A new confirmation code with its id (its wrong tries are counted under it) and issue time."""
        return {
            "confirmationCode": f"{secrets.randbelow(1_000_000):06d}",
            "codeId": uuid.uuid4().hex,
            "codeIssuedMs": self._clock.now_ms(),
        }

    def rehash_if_needed(self, email: str, stored: str, password: str) -> None:
        """Store `password` hashed with our parameters when `stored`, its hash, was made with others."""
        if not self._passwords.needs_rehash(stored):
            return
        # ConditionFailed: the password changed meanwhile, and that newer hash stays.
        with contextlib.suppress(ConditionFailed):
            self._users.update(
                {"email": email},
                {"passwordHash": self._passwords.hash(password)},
                condition=AttributeEquals("passwordHash", stored),
            )
