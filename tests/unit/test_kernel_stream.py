"""The follower side of the kernel's NDJSON stream: the lines it yields and the lines it refuses."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bookstore.domain import errors
from bookstore.kernel.stream import HEARTBEAT_S, ChangeFeed, follower_timeout, object_lines, wait_for


def _lines(body: bytes) -> list[dict[str, object]]:
    async def run() -> list[dict[str, object]]:
        response = httpx.Response(200, content=body)
        return [line async for line in object_lines(response, "eu-west-1")]

    return asyncio.run(run())


def test_the_objects_of_the_lines_are_yielded_and_blank_lines_skipped() -> None:
    assert _lines(b'{"a": 1}\n\n{"b": 2}\n') == [{"a": 1}, {"b": 2}]


def test_a_line_that_is_not_an_object_is_refused_naming_the_leader() -> None:
    with pytest.raises(errors.ValidationError, match="eu-west-1 sent a line that is not an object"):
        _lines(b'{"a": 1}\n[1, 2]\n')


def test_a_follower_reads_for_longer_than_a_few_heartbeats() -> None:
    read = follower_timeout(2.0).read
    assert read is not None and read > 3 * HEARTBEAT_S
    assert follower_timeout(2.0).connect == 2.0


def test_a_commit_from_another_thread_wakes_the_waiting_stream() -> None:
    async def run() -> tuple[bool, bool]:
        feed = ChangeFeed()
        feed.bind(asyncio.get_running_loop())
        idle = await wait_for(feed.current(), 0.01)
        wake = feed.current()
        await asyncio.to_thread(feed.notify)
        return idle, await wait_for(wake, 5.0)

    assert asyncio.run(run()) == (False, True)
