"""The Bookstore's tables, their keys and secondary indexes, as in the original's DynamoDB tables."""

from __future__ import annotations

from bookstore.ports import Index, TableSchema

BOOKS = TableSchema("books", "id", indexes=(Index("category-index", "category", "id"),))
ORDERS = TableSchema("orders", "customerId", "orderId")
CARTS = TableSchema("carts", "customerId", "bookId")
# Identity: users by normalised email; public signing keys by key id; refresh sessions by token id.
USERS = TableSchema("users", "email")
KEYS = TableSchema("keys", "kid")
SESSIONS = TableSchema("sessions", "sessionId")
# The object store's bucket directory: bucket names are one namespace, each bucket lives in one region.
BUCKETS = TableSchema("buckets", "name")

ALL: tuple[TableSchema, ...] = (BOOKS, ORDERS, CARTS, USERS, KEYS, SESSIONS, BUCKETS)
