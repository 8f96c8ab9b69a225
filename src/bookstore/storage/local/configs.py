"""Named bucket configurations (policy, CORS, lifecycle, ...) of the local object store: SQL and cache.

One row per (bucket, kind) in objects.sqlite3, its document as the S3 API checked it; every one is also
held in memory, since some are read on every request (a policy for anonymous reads, CORS for an Origin).
"""

from __future__ import annotations

import sqlite3

SCHEMA = """
CREATE TABLE IF NOT EXISTS bucket_configs (
    bucket TEXT NOT NULL,
    kind TEXT NOT NULL,
    document TEXT NOT NULL,
    PRIMARY KEY (bucket, kind)
) WITHOUT ROWID;
"""


class BucketConfigs:
    """Every bucket's named configurations: SQL in the caller's transaction, then the cache once committed."""

    def __init__(self, db: sqlite3.Connection) -> None:
        db.executescript(SCHEMA)
        self._documents: dict[tuple[str, str], str] = {
            (str(bucket), str(kind)): str(document)
            for bucket, kind, document in db.execute("SELECT bucket, kind, document FROM bucket_configs")
        }

    def get(self, bucket: str, kind: str) -> str | None:
        return self._documents.get((bucket, kind))

    @staticmethod
    def write(db: sqlite3.Connection, bucket: str, kind: str, document: str | None) -> None:
        """Store (None: delete) one configuration, inside the caller's transaction."""
        if document is None:
            db.execute("DELETE FROM bucket_configs WHERE bucket = ? AND kind = ?", (bucket, kind))
        else:
            db.execute(
                "INSERT OR REPLACE INTO bucket_configs (bucket, kind, document) VALUES (?, ?, ?)",
                (bucket, kind, document),
            )

    @staticmethod
    def erase_bucket(db: sqlite3.Connection, bucket: str) -> None:
        db.execute("DELETE FROM bucket_configs WHERE bucket = ?", (bucket,))

    def remember(self, bucket: str, kind: str, document: str | None) -> None:
        """The cache, once the transaction that wrote `document` (None: deleted it) has committed."""
        if document is None:
            self._documents.pop((bucket, kind), None)
        else:
            self._documents[(bucket, kind)] = document

    def forget_bucket(self, bucket: str) -> None:
        for found in [k for k in self._documents if k[0] == bucket]:
            del self._documents[found]
