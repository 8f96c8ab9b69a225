"""Test support: real servers (Redis, MariaDB) started on their own ports, and process helpers."""
