"""The record of completed uploads behind a repeated CompleteMultipartUpload: for its key, for a while."""

from __future__ import annotations

from bookstore.objectstore.completed import Completed, CompletedUploads


def test_a_completion_is_remembered_for_its_key_until_it_expires() -> None:
    record = CompletedUploads(keep_ms=1000, max_kept=10)
    record.add("u1", Completed("b", "k", "v1", "etag", at_ms=0))
    assert record.get("b", "k", "u1", now_ms=999) == Completed("b", "k", "v1", "etag", 0)
    assert record.get("b", "other", "u1", now_ms=999) is None
    assert record.get("b", "k", "u2", now_ms=999) is None
    assert record.get("b", "k", "u1", now_ms=1000) is None


def test_only_the_newest_are_kept() -> None:
    record = CompletedUploads(keep_ms=10**9, max_kept=2)
    for n in range(3):
        record.add(f"u{n}", Completed("b", "k", f"v{n}", "e", at_ms=n))
    assert record.get("b", "k", "u0", now_ms=3) is None
    assert [record.get("b", "k", f"u{n}", now_ms=3) is not None for n in (1, 2)] == [True, True]
