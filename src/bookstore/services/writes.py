"""Group commit: the writes of concurrent requests share one transaction, each answered after its commit."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from bookstore.ports import GroupRunner, Outcome

T = TypeVar("T")
# Units per transaction at most, so one group never holds the event loop (and the writer) for long.
MAX_GROUP = 64


class GroupCommit:
    """Runs units of writes (a cart put, a checkout) on the event loop, batched into shared transactions.

    Units handed in while the loop is busy wait for the next turn of the loop and then run together in
    one transaction of `run_group`, each all-or-nothing; every caller gets its unit's result or
    exception only after that transaction committed, so an answer never runs ahead of its write's
    durability. Under load one commit serves many requests; alone, a unit waits one turn of the loop.
    Without a `run_group` (an engine without shared transactions) each unit runs on its own, at once.
    A unit may run twice (SqliteDatabase.run_group runs the group again when one of its units failed
    after it wrote), so it writes only through the tables and has no other effect but its result.
    """

    def __init__(
        self,
        run_group: GroupRunner | None = None,
        max_group: int = MAX_GROUP,
        bind: Callable[[Callable[[], Any]], Callable[[], Any]] | None = None,
    ) -> None:
        """`bind(unit)` wraps each unit as it is handed in (tracing: to run it in its request's trace)."""
        self._run_group = run_group
        self._bind = bind
        self._max_group = max_group
        # Units waiting for the next turn of their event loop (one loop in a region; tests may run more).
        self._waiting: dict[
            asyncio.AbstractEventLoop, list[tuple[Callable[[], Any], asyncio.Future[Any]]]
        ] = {}
        self.groups = 0
        self.units = 0

    def run_now(self, units: Sequence[Callable[[], Any]]) -> list[Outcome]:
        """Run `units` at once, off any event loop, in one shared transaction where the engine has them
        (a bulk load: seeding a large catalog or history); each unit's result or exception, in order."""
        if self._run_group is not None:
            return self._run_group(units)
        outcomes: list[Outcome] = []
        for unit in units:
            try:
                outcomes.append(Outcome(value=unit()))
            except Exception as exc:
                outcomes.append(Outcome(error=exc))
        return outcomes

    async def run(self, unit: Callable[[], T]) -> T:
        """`unit()`'s result (or exception) once the transaction holding its writes has committed."""
        if self._bind is not None:
            unit = self._bind(unit)
        if self._run_group is None:
            return unit()
        loop = asyncio.get_running_loop()
        done: asyncio.Future[T] = loop.create_future()
        waiting = self._waiting.get(loop)
        if waiting is None:
            waiting = self._waiting[loop] = []
            # Requests the loop is handling in this turn join the group before it runs.
            loop.call_soon(self._commit_waiting, loop)
        waiting.append((unit, done))
        return await done

    def _commit_waiting(self, loop: asyncio.AbstractEventLoop) -> None:
        assert self._run_group is not None
        waiting = self._waiting.pop(loop)
        for start in range(0, len(waiting), self._max_group):
            group = waiting[start : start + self._max_group]
            try:
                outcomes = self._run_group([unit for unit, _ in group])
            except Exception as exc:
                for _, done in group:
                    if not done.done():
                        done.set_exception(exc)
                continue
            self.groups += 1
            self.units += len(group)
            for (_, done), outcome in zip(group, outcomes, strict=True):
                if done.done():
                    continue
                if outcome.error is not None:
                    done.set_exception(outcome.error)
                else:
                    done.set_result(outcome.value)
