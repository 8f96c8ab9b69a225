"""Orders and cart rows: quantities, pricing from the catalog, and order ids derived from idempotency keys."""

from __future__ import annotations

import hashlib
import os
import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from decimal import ROUND_HALF_UP, Decimal
from typing import Any

from bookstore.domain.books import check_book_id, price_of
from bookstore.domain.errors import ValidationError

MIN_QUANTITY = 1
MAX_QUANTITY = 99
MAX_LINES = 50
IDEMPOTENCY_KEY = re.compile(r"^[\x21-\x7e]{1,255}$")
CENTS = Decimal("0.01")


@dataclass(frozen=True)
class OrderLine:
    """One book of an order or a cart, before pricing."""

    book_id: str
    quantity: int


def check_quantity(quantity: object) -> int:
    # bool is an int in Python; a JSON `true` is not a quantity.
    if not isinstance(quantity, int) or isinstance(quantity, bool):
        raise ValidationError(f"quantity must be a whole number; got {quantity!r:.40}")
    if not MIN_QUANTITY <= quantity <= MAX_QUANTITY:
        raise ValidationError(f"quantity must be between {MIN_QUANTITY} and {MAX_QUANTITY}; got {quantity}")
    return quantity


def check_lines(lines: Iterable[OrderLine]) -> list[OrderLine]:
    """Lines with valid ids and quantities, each book once; at least one, at most MAX_LINES."""
    checked: list[OrderLine] = []
    seen: set[str] = set()
    for line in lines:
        check_book_id(line.book_id)
        check_quantity(line.quantity)
        if line.book_id in seen:
            raise ValidationError(f"book {line.book_id} appears twice; give each book once with its quantity")
        seen.add(line.book_id)
        checked.append(line)
    if not checked:
        raise ValidationError("an order needs at least one book")
    if len(checked) > MAX_LINES:
        raise ValidationError(f"an order holds at most {MAX_LINES} different books")
    return checked


def check_idempotency_key(key: str) -> str:
    if not IDEMPOTENCY_KEY.match(key):
        raise ValidationError("Idempotency-Key must be 1-255 visible ASCII characters")
    return key


def order_id(customer_id: str, idempotency_key: str | None, now_ms: int) -> str:
    """A time-ordered id; with an idempotency key, one id in every region for that customer and key."""
    if idempotency_key is not None:
        digest = hashlib.sha256(f"{customer_id}\n{idempotency_key}".encode()).hexdigest()
        return f"k-{digest[:32]}"
    return f"{now_ms:013d}-{os.urandom(8).hex()}"


def price_lines(
    lines: list[OrderLine], find_book: Callable[[str], dict[str, Any]]
) -> tuple[list[dict[str, Any]], Decimal]:
    """Priced lines `{bookId, quantity, price}` from the catalog (never from the client) and their total."""
    priced: list[dict[str, Any]] = []
    total = Decimal(0)
    for line in lines:
        price = price_of(find_book(line.book_id))
        priced.append({"bookId": line.book_id, "quantity": line.quantity, "price": float(price)})
        total += price * line.quantity
    return priced, total.quantize(CENTS, rounding=ROUND_HALF_UP)


def same_lines(order: dict[str, Any], lines: list[OrderLine]) -> bool:
    """Whether a stored order holds exactly these lines (for an idempotent replay)."""
    stored = {(b["bookId"], b["quantity"]) for b in order.get("books", [])}
    return stored == {(line.book_id, line.quantity) for line in lines}
