"""SSE-S3 key rotation: the port of a store that keeps keys of its own, and the re-encryption loop.

AWS rotates SSE-S3 keys itself; a store here holds its region's keys (the local store's keyring), and an
operator rotates them (`bookstore s3 rotate-key`), after a suspected leak with re-encryption: every
body is rewritten under the new key in the background, then the older keys are retired.
"""

from __future__ import annotations

import asyncio
import logging
from contextlib import suppress
from dataclasses import dataclass, field
from typing import Any, Protocol

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class KeyStatus:
    """The keys a store holds and how many bodies each encrypts."""

    keys: tuple[int, ...]
    newest: int
    # Keys below this id are being retired (a rotation with re-encryption runs); None: none are.
    retiring_below: int | None
    # Bodies per key id: a version counts under the oldest key of its pieces, a part of an upload under
    # its own; 0 is a body stored in clear (written before encryption at rest).
    bodies: dict[int, int] = field(default_factory=dict)

    def to_json(self) -> dict[str, Any]:
        return {
            "keys": list(self.keys),
            "newest": self.newest,
            "retiringBelow": self.retiring_below,
            "bodies": {str(k): n for k, n in sorted(self.bodies.items())},
        }


@dataclass(frozen=True)
class Progress:
    """What one step of re-encryption did: bodies rewritten, and whether no retirement is pending now."""

    rewritten: int
    done: bool


class KeyRotation(Protocol):
    """A store's SSE-S3 keys. Every call is thread-safe and may run beside the store's other calls.

    - rotate_key: makes a new key, used by every write from then on; older bodies stay readable. With
      `reencrypt`, every older key is marked to be retired (durably: a restart resumes). Raises
      StorageError when the key cannot be written.
    - reencrypt_step: rewrites up to `limit` bodies under keys marked to be retired with the newest key
      (each body crash-safe: the new one is durable before its row points at it, the old one is removed
      after; memory bounded by one piece of a body), and once no body, part or write in flight uses
      them, retires those keys (their files removed). Idempotent; `done` when nothing is pending.
    - key_status: the keys and how many bodies each encrypts (reads every row: not for hot paths).
    """

    def rotate_key(self, *, reencrypt: bool) -> KeyStatus: ...

    def reencrypt_step(self, limit: int = 16) -> Progress: ...

    def key_status(self) -> KeyStatus: ...


class Reencryptor:
    """Runs a store's pending re-encryption in the background of the region process, step by step.

    Each step runs in a worker thread; between steps the loop yields for `pause_s`, so requests keep
    their share of the store's lock and of the disk. `wake()` starts a pass at once after a rotation;
    otherwise the loop looks every `idle_s` (a pending re-encryption at start resumes this way).
    """

    def __init__(
        self, keys: KeyRotation, *, batch: int = 16, pause_s: float = 0.01, idle_s: float = 5.0
    ) -> None:
        self.keys = keys
        self.batch = batch
        self.pause_s = pause_s
        self.idle_s = idle_s
        self._wake = asyncio.Event()

    def wake(self) -> None:
        self._wake.set()

    async def run(self, stop: asyncio.Event) -> None:
        pending, rewritten = False, 0
        while not stop.is_set():
            try:
                progress = await asyncio.to_thread(self.keys.reencrypt_step, self.batch)
            except Exception:
                # A body that cannot be rewritten now (a disk error) is tried again at the next pass.
                log.exception("re-encryption step failed; retrying later")
                progress = Progress(0, False)
            rewritten += progress.rewritten
            if pending and progress.done:
                log.info("re-encryption done: %d bodies rewritten, older SSE-S3 keys retired", rewritten)
                rewritten = 0
            pending = not progress.done
            if progress.done:
                pause = self.idle_s
            elif progress.rewritten:
                pause = self.pause_s
            else:
                # Rows left that a write holds, or keys leased by writes in flight: look again soon.
                pause = min(self.idle_s, 0.2)
            self._wake.clear()
            with suppress(TimeoutError):
                await asyncio.wait_for(_first(stop, self._wake), pause)


async def _first(*events: asyncio.Event) -> None:
    """Returns when any of `events` is set."""
    waits = [asyncio.ensure_future(e.wait()) for e in events]
    try:
        await asyncio.wait(waits, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for w in waits:
            w.cancel()
