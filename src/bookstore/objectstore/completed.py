"""Uploads this region completed lately, so a repeated CompleteMultipartUpload answers as the first did."""

from __future__ import annotations

import threading
from collections import OrderedDict
from dataclasses import dataclass

# How long a completed upload is remembered, and how many at most: an SDK retries within minutes.
KEEP_MS = 60 * 60 * 1000
MAX_KEPT = 10_000


@dataclass(frozen=True)
class Completed:
    """What CompleteMultipartUpload answered: the object's version id, ETag, checksum elements (rendered)
    and encryption headers, and when."""

    bucket: str
    key: str
    version_id: str
    etag: str
    at_ms: int
    checksum: str = ""
    headers: tuple[tuple[str, str], ...] = ()


class CompletedUploads:
    """Upload id -> its completion, for KEEP_MS (S3 answers a retried complete 200 with the same result).

    Held in memory: a retry goes to the region that owns the bucket, within minutes of the first try;
    a region restarted in between answers NoSuchUpload, as before.
    """

    def __init__(self, keep_ms: int = KEEP_MS, max_kept: int = MAX_KEPT) -> None:
        self._keep_ms = keep_ms
        self._max_kept = max_kept
        self._lock = threading.Lock()
        self._done: OrderedDict[str, Completed] = OrderedDict()

    def add(self, upload_id: str, completed: Completed) -> None:
        with self._lock:
            self._done[upload_id] = completed
            self._done.move_to_end(upload_id)
            self._trim(completed.at_ms)

    def get(self, bucket: str, key: str, upload_id: str, now_ms: int) -> Completed | None:
        """The completion of `upload_id` if it was for this bucket and key and is still remembered."""
        with self._lock:
            self._trim(now_ms)
            found = self._done.get(upload_id)
        if found is None or (found.bucket, found.key) != (bucket, key):
            return None
        return found

    def _trim(self, now_ms: int) -> None:
        while self._done:
            oldest = next(iter(self._done.values()))
            if len(self._done) <= self._max_kept and now_ms - oldest.at_ms < self._keep_ms:
                break
            self._done.popitem(last=False)
