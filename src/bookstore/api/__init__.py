"""The Bookstore HTTP API."""
