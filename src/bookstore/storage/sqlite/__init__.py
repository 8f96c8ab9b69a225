"""The embedded default: SQLite files in the region's data directory."""
