"""The lifecycle sweeper: carries out the buckets' lifecycle rules in the background, as S3 does daily.

Each pass (every `interval_s`, in a worker thread) reads every bucket's lifecycle configuration and,
for its enabled rules:
- Expiration Days/Date: the current version of a matching object expires `Days` days after it was
  written, rounded up to the next day boundary (S3 rounds to the next midnight UTC), or from `Date` on:
  a delete marker in a versioned bucket, the object removed in an unversioned one.
- Expiration ExpiredObjectDeleteMarker: a delete marker with no other version left is removed.
- NoncurrentVersionExpiration: a version `NoncurrentDays` days after it stopped being current (when the
  next one was written) is removed, keeping the `NewerNoncurrentVersions` newest noncurrent ones.
- AbortIncompleteMultipartUpload: uploads started `DaysAfterInitiation` days ago are aborted.
What a sweep does is never replicated: S3 replicates neither the delete markers its lifecycle adds nor
deletes of versions, so each region's lifecycle rules (configurations are per bucket) decide alone.
A day lasts `day_ms` (86,400,000 as on S3; tests shorten it).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

from bookstore.domain.errors import BookstoreError
from bookstore.objectstore.errors import NoSuchUpload
from bookstore.objectstore.lifecycle import KIND, Scope, date_ms, scope
from bookstore.objectstore.port import ObjectStore, ObjectVersion
from bookstore.ports import Clock

log = logging.getLogger("bookstore.objectstore.lifecycle")

DAY_MS = 24 * 3600 * 1000


@dataclass
class Swept:
    """What one pass did, counted."""

    expired: int = 0
    markers_removed: int = 0
    noncurrent_removed: int = 0
    uploads_aborted: int = 0
    errors: list[str] = field(default_factory=list)


@dataclass(frozen=True)
class _Rule:
    scope: Scope
    days: int | None
    date_ms: int | None
    expired_markers: bool
    noncurrent_days: int | None
    newer_noncurrent: int
    abort_days: int | None


def _rules(document: str) -> list[_Rule]:
    rules = []
    for rule in json.loads(document)["Rules"]:
        if rule["Status"] != "Enabled":
            continue
        expiration: dict[str, Any] = rule.get("Expiration", {})
        noncurrent: dict[str, Any] = rule.get("NoncurrentVersionExpiration", {})
        abort: dict[str, Any] = rule.get("AbortIncompleteMultipartUpload", {})
        rules.append(
            _Rule(
                scope=scope(rule),
                days=expiration.get("Days"),
                date_ms=date_ms(expiration["Date"]) if "Date" in expiration else None,
                expired_markers=bool(expiration.get("ExpiredObjectDeleteMarker", False)),
                noncurrent_days=noncurrent.get("NoncurrentDays"),
                newer_noncurrent=int(noncurrent.get("NewerNoncurrentVersions", 0)),
                abort_days=abort.get("DaysAfterInitiation"),
            )
        )
    return rules


class LifecycleSweeper:
    """Sweeps `store` by its buckets' lifecycle rules; `run` repeats it until stopped."""

    def __init__(
        self, store: ObjectStore, clock: Clock, *, day_ms: int = DAY_MS, interval_s: float | None = None
    ):
        self.store = store
        self.clock = clock
        self.day_ms = day_ms
        # Often enough that nothing waits long past its day: S3 itself runs lifecycle about once a day.
        self.interval_s = interval_s if interval_s is not None else min(3600.0, max(0.05, day_ms / 1000 / 4))

    async def run(self, stop: asyncio.Event) -> None:
        while not stop.is_set():
            try:
                swept = await asyncio.to_thread(self.sweep)
                done = (swept.expired, swept.markers_removed, swept.noncurrent_removed, swept.uploads_aborted)
                if any(done):
                    log.info(
                        "lifecycle: %d expired, %d delete markers and %d noncurrent versions removed, "
                        "%d uploads aborted",
                        *done,
                    )
                for error in swept.errors:
                    log.warning("lifecycle: %s", error)
            except Exception:
                log.exception("lifecycle sweep failed")
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(stop.wait(), timeout=self.interval_s)

    def _due(self, start_ms: int, days: int) -> int:
        """When something `days` days after `start_ms` is due: rounded up to the next day boundary."""
        end = start_ms + days * self.day_ms
        return -(-end // self.day_ms) * self.day_ms

    def sweep(self) -> Swept:
        """One pass over every bucket with a lifecycle configuration."""
        swept = Swept()
        for bucket in self.store.list_buckets():
            try:
                document = self.store.get_config(bucket.name, KIND)
                if document is None:
                    continue
                rules = _rules(document)
                if rules:
                    self._bucket(bucket.name, rules, swept)
            except BookstoreError as exc:
                swept.errors.append(f"{bucket.name}: {exc}")
        return swept

    def _bucket(self, bucket: str, rules: list[_Rule], swept: Swept) -> None:
        now = self.clock.now_ms()
        for versions in self._keys(bucket):
            self._key(bucket, versions, rules, now, swept)
        for rule in rules:
            if rule.abort_days is None:
                continue
            started_before = now - rule.abort_days * self.day_ms
            for key, upload_id in self.store.uploads_started_before(bucket, started_before):
                if key.startswith(rule.scope.prefix):
                    try:
                        self.store.abort_upload(bucket, key, upload_id)
                    except NoSuchUpload:
                        continue  # completed, aborted, or matched by an earlier rule meanwhile
                    swept.uploads_aborted += 1

    def _keys(self, bucket: str) -> Iterator[list[ObjectVersion]]:
        """Every key's versions, newest first; a key is handed over only once all of it was listed."""
        key_marker, version_marker = "", ""
        group: list[ObjectVersion] = []
        while True:
            page = self.store.list_versions(bucket, key_marker=key_marker, version_id_marker=version_marker)
            for version in page.versions:
                if group and group[0].key != version.key:
                    yield group
                    group = []
                group.append(version)
            if page.next_key_marker is None:
                break
            key_marker, version_marker = page.next_key_marker, page.next_version_id_marker or ""
        if group:
            yield group

    def _tags(self, bucket: str, version: ObjectVersion, rules: list[_Rule]) -> dict[str, str]:
        # Listings carry no tags: read them only when a rule filters by tag.
        if version.is_delete_marker or not any(r.scope.tags for r in rules):
            return {}
        return dict(self.store.head_object(bucket, version.key, version_id=version.version_id).tags)

    def _key(
        self,
        bucket: str,
        versions: list[ObjectVersion],
        rules: list[_Rule],
        now: int,
        swept: Swept,
    ) -> None:
        key = versions[0].key
        current = versions[0] if versions[0].is_latest else None
        # Noncurrent versions: each stopped being current when the next newer one was written.
        kept = list(versions)
        for index, version in enumerate(versions[1:], start=1):
            since = versions[index - 1].last_modified_ms
            tags = self._tags(bucket, version, rules)
            for rule in rules:
                if rule.noncurrent_days is None or not rule.scope.matches(key, version.size, tags):
                    continue
                if index <= rule.newer_noncurrent:
                    continue
                if self._due(since, rule.noncurrent_days) <= now:
                    self.store.delete_object(bucket, key, version_id=version.version_id)
                    kept.remove(version)
                    swept.noncurrent_removed += 1
                    break
        if current is None:
            return
        if current.is_delete_marker:
            if len(kept) == 1 and any(r.expired_markers and key.startswith(r.scope.prefix) for r in rules):
                self.store.delete_object(bucket, key, version_id=current.version_id)
                swept.markers_removed += 1
            return
        tags = self._tags(bucket, current, rules)
        for rule in rules:
            if not rule.scope.matches(key, current.size, tags):
                continue
            by_days = rule.days is not None and self._due(current.last_modified_ms, rule.days) <= now
            by_date = rule.date_ms is not None and rule.date_ms <= now
            if by_days or by_date:
                # S3 replicates no delete marker its lifecycle writes.
                self.store.delete_object(bucket, key, replicate=False)
                swept.expired += 1
                return
