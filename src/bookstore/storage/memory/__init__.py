"""In-memory adapters of the ports, for unit tests: same contracts, no persistence."""

from bookstore.storage.memory.keys import MemoryKeys
from bookstore.storage.memory.objects import MemoryObjectStore
from bookstore.storage.memory.ranking import MemoryRanking
from bookstore.storage.memory.search import MemorySearchIndex
from bookstore.storage.memory.tables import MemoryTable

__all__ = ["MemoryKeys", "MemoryObjectStore", "MemoryRanking", "MemorySearchIndex", "MemoryTable"]
