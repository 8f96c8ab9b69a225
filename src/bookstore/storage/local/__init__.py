"""Local-disk adapters: the object store as content files plus SQLite metadata under one directory."""

from bookstore.storage.local.objects import LocalObjectStore

__all__ = ["LocalObjectStore"]
