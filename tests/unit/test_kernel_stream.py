"""The follower side of the kernel's NDJSON stream: the lines it yields and the lines it refuses."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator

import httpx
import orjson
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


def test_a_string_holding_a_unicode_line_break_stays_in_its_line() -> None:
    # orjson writes U+2028, U+2029 and U+0085 as they are (valid JSON): only "\n" ends a stream's line.
    # Lines were split as str.splitlines splits, so an item with one of them in a string broke its
    # line in two, and the follower failed on that line on every reconnection.
    items = [{"name": "a\u2028b"}, {"name": "c\u2029d\x85e"}, {"name": "f\x1cg\x0bh\ri"}]
    body = b"".join(orjson.dumps(item) + b"\n" for item in items)
    assert _lines(body) == items


def test_lines_split_across_chunks_and_a_last_line_without_its_newline_are_whole() -> None:
    body = b'{"a": 1}\r\n{"b": "' + b"x" * 70_000 + b'"}\n \n{"c": 3}'

    async def run(size: int) -> list[dict[str, object]]:
        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(body), size):
                yield body[start : start + size]

        response = httpx.Response(200, content=chunks())
        return [line async for line in object_lines(response, "eu-west-1")]

    for size in (1, 7, 4096, len(body)):
        assert asyncio.run(run(size)) == [{"a": 1}, {"b": "x" * 70_000}, {"c": 3}]


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


def test_another_processs_commit_wakes_every_waiting_stream_with_one_probe_per_poll() -> None:
    head = [0]
    probes = [0]

    def probe() -> int:
        probes[0] += 1
        return head[0]

    async def run() -> tuple[list[bool], int, float]:
        feed = ChangeFeed()
        feed.watch(probe, 0.005)
        loop = asyncio.get_running_loop()
        await feed.wait(feed.current(), 0.05)  # the first poll takes in the head (and wakes, for nothing)
        probes[0] = 0
        wake = feed.current()
        waiting = [asyncio.create_task(feed.wait(wake, 5.0)) for _ in range(10)]
        await asyncio.sleep(0.1)  # about 20 polls of the same head: nobody woken
        assert not any(t.done() for t in waiting)
        polls_while_idle = probes[0]
        started = loop.time()
        head[0] = 1  # a commit of another process: only the head says so
        woken = list(await asyncio.gather(*waiting))
        return woken, polls_while_idle, loop.time() - started

    woken, polls, waited = asyncio.run(run())
    assert woken == [True] * 10 and waited < 1.0
    # One probe per poll for the ten streams together (a stream each would have made ten per poll).
    assert 1 <= polls <= 0.1 / 0.005 + 5


def test_a_change_made_while_no_stream_waited_wakes_the_next_waiter() -> None:
    head = [0]

    async def run() -> bool:
        feed = ChangeFeed()
        feed.watch(lambda: head[0], 0.005)
        await feed.wait(feed.current(), 0.05)  # the feed has seen head 0
        wake = feed.current()  # a stream took its event, then read the log (head 0)...
        head[0] = 1  # ...another process committed before the stream waits: nobody was polling
        return await feed.wait(wake, 2.0)

    assert asyncio.run(run()) is True


def test_a_wait_ends_at_its_timeout_or_at_a_commit_and_a_stream_gone_leaves_the_others_waiting() -> None:
    async def run() -> tuple[bool, bool, bool, bool]:
        feed = ChangeFeed()
        feed.bind(asyncio.get_running_loop())
        timed_out = await feed.wait(feed.current(), 0.01)
        wake = feed.current()
        leaving = asyncio.create_task(feed.wait(wake, 5.0))
        staying = asyncio.create_task(feed.wait(wake, 5.0))
        await asyncio.sleep(0.01)
        leaving.cancel()  # a follower went away
        await asyncio.sleep(0.01)
        feed.notify()
        woken = await staying
        # An event the feed set already (a stream that read before the wake) returns at once.
        late = await asyncio.wait_for(feed.wait(wake, 5.0), 1.0)
        return timed_out, woken, leaving.cancelled(), late

    assert asyncio.run(run()) == (False, True, True, True)
