"""In-memory adapters of the ports, for unit tests: same contracts, no persistence."""

from bookstore.storage.memory.tables import MemoryTable

__all__ = ["MemoryTable"]
