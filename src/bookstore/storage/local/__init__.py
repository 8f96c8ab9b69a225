"""Local-disk adapters: the object store as content files plus SQLite metadata, signing keys as files."""

from bookstore.storage.local.keys import KeyFiles
from bookstore.storage.local.objects import LocalObjectStore

__all__ = ["KeyFiles", "LocalObjectStore"]
