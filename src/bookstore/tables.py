"""The Bookstore's tables, their keys and secondary indexes, as in the original's DynamoDB tables."""

from __future__ import annotations

from bookstore.ports import FIRST_WRITER_WINS, Index, TableSchema

BOOKS = TableSchema("books", "id", indexes=(Index("category-index", "category", "id"),))
ORDERS_BY_DATE = "date-index"
# Orders are immutable: a key written in two regions before either saw the other keeps its first version.
# A customer's history is read newest first a page at a time through the date index (ids of orders with
# an Idempotency-Key are hashes, so the table's own order is not the date order).
ORDERS = TableSchema(
    "orders",
    "customerId",
    "orderId",
    indexes=(Index(ORDERS_BY_DATE, "customerId", "orderDate"),),
    conflict_rule=FIRST_WRITER_WINS,
    number_keys=("orderDate",),
)
CARTS = TableSchema("carts", "customerId", "bookId")
# Identity: users by normalised email; public signing keys by key id; refresh sessions by token id.
USERS = TableSchema("users", "email")
KEYS = TableSchema("keys", "kid")
SESSIONS = TableSchema("sessions", "sessionId")
# Sign-outs, by session id: written once and never undone (no write of the session can bring it back).
REVOCATIONS = TableSchema("revocations", "sessionId", conflict_rule=FIRST_WRITER_WINS)
# Failed attempts (sign-in, confirmation codes) per subject; each region writes only its own rows, and
# finds its expired ones (to remove them) by region and expiry (services.attempts).
ATTEMPTS = TableSchema("attempts", "subject", "slot", indexes=(Index("expiry-index", "region", "expires"),))
# The object store's bucket directory: bucket names are one namespace, each bucket lives in one region.
BUCKETS = TableSchema("buckets", "name")

ALL: tuple[TableSchema, ...] = (BOOKS, ORDERS, CARTS, USERS, KEYS, SESSIONS, REVOCATIONS, ATTEMPTS, BUCKETS)
