"""Bounded waiting for tests: poll until a condition holds, fail clearly with what was last seen."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TypeVar

import httpx
import pytest

T = TypeVar("T")


def wait_for(
    what: str,
    probe: Callable[[], T],
    ok: Callable[[T], bool],
    timeout: float,
    tolerate: tuple[type[Exception], ...] = (httpx.HTTPError,),
) -> T:
    """Poll `probe` until `ok` holds for its value and return that value; fail after `timeout` seconds.

    Errors of the `tolerate` kinds (a region restarting, a request crossing a cut link) count as "not
    yet"; the last value or error seen goes into the failure message.
    """
    deadline = time.monotonic() + timeout
    last: object = "<never probed>"
    while True:
        try:
            value = probe()
        except tolerate as exc:
            last = exc
        else:
            if ok(value):
                return value
            last = value
        if time.monotonic() >= deadline:
            pytest.fail(f"{what}: not reached within {timeout:.0f} s; last seen: {last!r:.3000}")
        time.sleep(0.05)
