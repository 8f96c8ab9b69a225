"""One region's blog replication: follows its peers, serves them, promotes, re-syncs, rejoins by itself."""

from __future__ import annotations

import asyncio
import contextlib
import logging
import ssl
import threading
import time
from collections.abc import AsyncIterator, Collection, Mapping, Sequence
from typing import Any, Final

import httpx
from prometheus_client import CollectorRegistry

from bookstore.blog.repository import BlogRepository, RowChange
from bookstore.domain import errors
from bookstore.kernel.auth import PeerAuth
from bookstore.kernel.link_faults import LinkFaults
from bookstore.kernel.stream import HEARTBEAT_S, ChangeFeed, ndjson_line
from bookstore.ports import Clock
from bookstore.replication.blog.metrics import BlogMetrics
from bookstore.replication.blog.peers import BlogPeer, HttpBlogPeer, PeerRefused, PeerView
from bookstore.replication.blog.shipping import Shipping
from bookstore.replication.blog.state import Adoption, BlogState, Epoch, epoch_rank
from bookstore.replication.blog.store import BATCH, BlogStore
from bookstore.replication.blog.wire import (
    STREAM_S,
    SWITCHOVER_TIMEOUT_S,
    FollowRequest,
    announce,
    change_json,
    parse_changes,
    parse_history,
)
from bookstore.replication.tables.replicator import LagWindow

log = logging.getLogger("bookstore.blog.replication")

# Commits of this process wake the streams at once; other processes' (the CLI's, a bench writer's) are
# seen within one poll of the log's head, made once for all streams (ChangeFeed.watch). Not more often:
# at 500 writes/s a 2 ms poll sent five times the batches (a read, a line and a replica's commit each)
# and the replica's lag p99 grew under load.
POLL_S: Final = 0.01
# A (re)started primary takes writes once every region of the electorate answered with its epoch; the
# regions that do not (down, or behind a cut link) are given up on after this long.
CONFIRM_TIMEOUT_S: Final = 10.0
# How long a write waits for that confirmation before it is refused with 503.
GATE_WAIT_S: Final = 5.0
# How long a promotion waits for each region's answer when it counts the majority it reaches.
QUORUM_TIMEOUT_S: Final = 3.0
# A region that must re-sync and failed to (the primary deposed meanwhile, a cut) tries again after this.
AUTO_REJOIN_RETRY_S: Final = 1.0


class BlogReplication:
    """One region's side of blog replication: follows its peers, serves them, promotes, re-syncs.

    Installs a write gate and a commit listener on the repository. `run(stop)` is the region's loop;
    `routes.blog_routes(node)` the endpoints it serves under /replication/blog/ (behind PeerAuthMiddleware).
    """

    def __init__(
        self,
        store: BlogStore,
        peers: Sequence[BlogPeer],
        *,
        clock: Clock,
        metrics: BlogMetrics | None = None,
        regions: Collection[str] = (),
        confirm_peers: Collection[str] | None = None,
        confirm_timeout_s: float = CONFIRM_TIMEOUT_S,
    ) -> None:
        self.store = store
        self.region = store.region
        self.peers = {p.region: p for p in peers}
        self.clock = clock
        self.metrics = metrics or BlogMetrics(None, self.region)
        self.regions = set(regions) | set(self.peers) | {self.region}
        self.confirm_peers = set(self.peers if confirm_peers is None else confirm_peers) - {self.region}
        self.confirm_timeout_s = confirm_timeout_s
        self.views: dict[str, PeerView] = {p: PeerView() for p in self.peers}
        self.lags = LagWindow()
        self.feed = ChangeFeed()
        self.shipping = Shipping()
        self.confirmed = threading.Event()
        self._version = 0
        self._lock = asyncio.Lock()
        self.state: BlogState = store.state()
        self._last_applied_ms: int | None = None
        self._rejoin_retry_at = 0.0
        if not self.state.writable:
            self.confirmed.set()
        store.repository.write_gate = self.gate
        store.repository.listeners.append(self.feed.notify)
        store.repository.before_acknowledging = self._until_sent
        self.feed.watch(lambda: store.head()[0], POLL_S)
        m = self.metrics
        m.epoch.set_function(lambda: self.state.epoch)
        m.read_only.set_function(lambda: 0 if self.state.writable else 1)
        m.position.set_function(lambda: self.state.applied_lsn)
        m.behind.set_function(lambda: self.lag_entries() or 0)
        m.behind_seconds.set_function(lambda: self.lag_seconds() or 0.0)
        m.diverged.set_function(self.store.diverged_count)

    # the write gate --------------------------------------------------------------------------------------

    def gate(self) -> None:
        """Before every write: a primary that just started waits until its peers confirmed its epoch."""
        if not self.confirmed.wait(GATE_WAIT_S):
            raise errors.Unavailable(
                f"the blog in {self.region} is checking with its peers that it is still the primary; "
                "retry in a few seconds"
            )

    def _until_sent(self, first: int, last: int) -> None:
        """After a write commits, before it is acknowledged: until the caught-up followers' streams have
        sent it (a kill -9 of this process then cannot take it from the lineage; see shipping.py)."""
        if not self.shipping.wait(first, last) and threading.get_ident() != self.shipping.loop_thread:
            log.warning(
                "region=%s event=blog_write_not_sent lsn=%d: acknowledged after %g s before every "
                "follower's stream had sent it",
                self.region,
                last,
                self.shipping.wait_s,
            )

    # state -----------------------------------------------------------------------------------------------

    async def refresh(self) -> BlogState:
        """The stored state, read under the lock: a read that a decision (an adoption, a promotion)
        overtook would be assigned after it, and take this region's view (what it announces, whether it
        serves its log) back to before it."""
        async with self._lock:
            return await self._reload()

    async def _reload(self) -> BlogState:
        """Re-reads the stored state; the caller holds the lock."""
        self.state = await asyncio.to_thread(self.store.state)
        return self.state

    def _changed(self) -> None:
        """The stored state moved: streams re-send it and followers reconnect with the new position."""
        self._version += 1
        self.feed.notify()

    async def adopt(self, epoch: int, primary: str, history: Sequence[Epoch], source: str) -> Adoption | None:
        """A peer's epoch met: adopt it when ranked higher (demoting this region if it was the primary)."""
        st = self.state
        known = {h.epoch: h.primary_region for h in st.history}
        if epoch_rank(epoch, primary) <= epoch_rank(st.epoch, st.primary_region) and all(
            h.epoch in known and known[h.epoch] >= h.primary_region for h in history
        ):
            return None
        async with self._lock:
            adoption = await asyncio.to_thread(self.store.observe, epoch, primary, history)
            await self._reload()
        if adoption is None:
            return None
        self._changed()
        self.confirmed.set()
        self.metrics.epoch_changes.labels("adopted").inc()
        log.warning(
            "region=%s event=blog_epoch_adopted from=%d to=%d primary=%s source=%s was_primary=%s "
            "diverged=%d needs_rejoin=%s",
            self.region,
            adoption.from_epoch,
            adoption.to_epoch,
            adoption.primary_region,
            source,
            adoption.was_primary,
            adoption.diverged,
            adoption.needs_rejoin,
        )
        return adoption

    async def adopt_json(self, raw: Mapping[str, Any], source: str) -> Adoption | None:
        epoch, primary = raw.get("epoch"), raw.get("primaryRegion")
        if (
            not isinstance(epoch, int)
            or epoch < 1
            or not isinstance(primary, str)
            or primary not in self.regions
        ):
            raise errors.ValidationError(f"{source} sent no valid epoch and primary region")
        return await self.adopt(epoch, primary, parse_history(raw.get("history")), source)

    def lag_entries(self) -> int | None:
        """Records of the primary's log this replica has not applied (None for a primary or when unknown)."""
        st = self.state
        if st.role != "replica":
            return None
        view = self.views.get(st.primary_region)
        if view is None or view.head_lsn is None or view.epoch != st.epoch:
            return None
        return max(0, view.head_lsn - st.applied_lsn)

    def lag_seconds(self) -> float | None:
        """0 when caught up; else the age of the newest applied write (an underestimate of the oldest
        unapplied one's); None for a primary or when the primary is not reachable."""
        behind = self.lag_entries()
        view = self.views.get(self.state.primary_region)
        if behind is None or view is None or not view.connected:
            return None
        if behind == 0:
            return 0.0
        reference = self._last_applied_ms if self._last_applied_ms is not None else view.heard_ms
        return max(0.0, (self.clock.now_ms() - (reference or self.clock.now_ms())) / 1000)

    # the loop --------------------------------------------------------------------------------------------

    async def run(self, stop: asyncio.Event) -> None:
        self.feed.bind(asyncio.get_running_loop())
        self.shipping.loop_thread = threading.get_ident()
        await self.refresh()
        tasks = [
            asyncio.create_task(self._watch(p, stop), name=f"blog-{p.region}") for p in self.peers.values()
        ]
        if not self.confirm_peers:
            self.confirmed.set()
        tasks.append(asyncio.create_task(self._confirm_after_timeout(stop), name="blog-confirm"))
        try:
            await stop.wait()
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)
            for peer in self.peers.values():
                with contextlib.suppress(Exception):
                    await peer.aclose()

    async def _confirm_after_timeout(self, stop: asyncio.Event) -> None:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(stop.wait(), timeout=self.confirm_timeout_s)
        if not self.confirmed.is_set() and not stop.is_set():
            silent = sorted(p for p in self.views if self.views[p].heard_ms is None)
            log.warning(
                "region=%s event=blog_confirm_timeout unreachable=%s epoch=%d: taking writes as the primary",
                self.region,
                ",".join(silent),
                self.state.epoch,
            )
            self.confirmed.set()

    def electorate(self) -> set[str]:
        """The regions a promotion needs a majority of: the deployment's and every one the history names."""
        return self.regions | {h.primary_region for h in self.state.history}

    def _settled(self, peer: str) -> None:
        """Confirms a (re)started primary once every region of the electorate answered with its epoch.

        A failed stream is no answer (the region may be up behind a cut link, or just restarting, and
        hold a newer epoch): those are waited for until the confirmation timeout.
        """
        waited = (self.confirm_peers | ({h.primary_region for h in self.state.history} & set(self.views))) - {
            self.region
        }
        if not self.confirmed.is_set() and all(self.views[p].heard_ms is not None for p in waited):
            log.info(
                "region=%s event=blog_epoch_confirmed epoch=%d peer=%s", self.region, self.state.epoch, peer
            )
            self.confirmed.set()

    async def _watch(self, peer: BlogPeer, stop: asyncio.Event) -> None:
        backoff = 0.05
        while not stop.is_set():
            try:
                await self._follow_once(peer)
                backoff = 0.05
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # a peer down or a link cut: retry with backoff, never give up
                view = self.views[peer.region]
                if view.connected:
                    log.warning(
                        "region=%s event=blog_peer_lost peer=%s error=%s", self.region, peer.region, exc
                    )
                view.connected, view.failed = False, True
                view.error = f"{type(exc).__name__}: {exc}"[:300]
                with contextlib.suppress(TimeoutError):
                    await asyncio.wait_for(stop.wait(), timeout=backoff)
                backoff = min(backoff * 2, 1.0)

    async def _follow_once(self, peer: BlogPeer) -> None:
        """One stream from `peer`: epochs both ways, and its log when it is our primary."""
        version = self._version
        st = self.state
        following = st.role == "replica" and st.primary_region == peer.region and not st.needs_rejoin
        after_epoch: int | None = 0
        if following and st.applied_lsn > 0:
            after_epoch = await asyncio.to_thread(self.store.epoch_at, st.applied_lsn)
        body = {
            "region": self.region,
            **announce(st),
            "after": st.applied_lsn if following else None,
            "afterEpoch": after_epoch or 0,
            "streamMs": int(STREAM_S * 1000),
        }
        view = self.views[peer.region]
        async for line in peer.follow(body):
            now = self.clock.now_ms()
            if not view.connected:
                log.info(
                    "region=%s event=blog_peer_connected peer=%s following=%s",
                    self.region,
                    peer.region,
                    following,
                )
            view.connected, view.heard_ms, view.error = True, now, None
            view.epoch = line.get("epoch") if isinstance(line.get("epoch"), int) else None
            view.primary = line.get("primaryRegion") if isinstance(line.get("primaryRegion"), str) else None
            view.read_only = bool(line.get("readOnly"))
            view.head_lsn = line.get("headLsn") if isinstance(line.get("headLsn"), int) else None
            await self.adopt_json(line, peer.region)
            self._settled(peer.region)
            if line.get("error") == "Diverged":
                await self._diverged_from(peer.region, str(line.get("message", "")))
                return
            if self._version != version:
                return  # our state moved: ask again with it
            if self._should_rejoin(peer.region, view):
                await self._auto_rejoin(peer)
                if self._version != version:
                    return  # re-synced: follow again from the new position
            changes = parse_changes(line.get("changes"))
            if following and changes and view.epoch == st.epoch and view.primary == peer.region:
                await self._apply(peer.region, st.epoch, changes)
            if self._version != version:
                return

    async def _apply(self, source: str, epoch: int, changes: Sequence[RowChange]) -> None:
        async with self._lock:
            try:
                applied = await asyncio.to_thread(
                    self.store.repository.apply, changes, epoch=epoch, primary=source
                )
            except errors.Conflict as exc:
                log.info(
                    "region=%s event=blog_apply_refused source=%s reason=%s", self.region, source, exc.message
                )
                await self._reload()
                self._changed()
                return
            if applied:
                self.state = _with_applied(self.state, max(c.lsn for c in changes))
        now = self.clock.now_ms()
        if applied:
            self._last_applied_ms = max(c.written_ms for c in changes)
            self.metrics.applied.inc(applied)
            for c in changes[-applied:]:
                lag = max(0, now - c.written_ms)
                self.lags.add(source, now, lag)
                self.metrics.lag.labels(source, self.region).observe(lag / 1000)

    def _should_rejoin(self, source: str, view: PeerView) -> bool:
        """Whether to re-sync from `source` now: this region must re-sync (a deposed primary, or a replica
        past its primary's lineage) and `source` just said it is the writable primary of our epoch."""
        st = self.state
        return (
            st.needs_rejoin
            and st.role == "replica"
            and st.primary_region == source
            and view.epoch == st.epoch
            and view.primary == source
            and view.read_only is False
            and time.monotonic() >= self._rejoin_retry_at
        )

    async def _auto_rejoin(self, peer: BlogPeer) -> None:
        """Re-syncs from the primary by itself (no operator): the diverged writes were kept at adoption.

        A refusal (the peer was deposed meanwhile, a cut link) is logged and retried after a pause, on a
        later line of a stream from the primary.
        """
        try:
            await self._resync_from(peer, reason="automatic")
        except (httpx.HTTPError, errors.BookstoreError) as exc:
            self._rejoin_retry_at = time.monotonic() + AUTO_REJOIN_RETRY_S
            log.warning(
                "region=%s event=blog_rejoin_failed primary=%s error=%s: retrying in %g s",
                self.region,
                peer.region,
                f"{type(exc).__name__}: {exc}"[:300],
                AUTO_REJOIN_RETRY_S,
            )

    async def _diverged_from(self, primary: str, message: str) -> None:
        log.error("region=%s event=blog_diverged primary=%s detail=%s", self.region, primary, message)
        async with self._lock:
            await asyncio.to_thread(self.store.mark_needs_rejoin)
            await self._reload()
        self._changed()

    # serving peers ---------------------------------------------------------------------------------------

    async def serve_follow(self, body: FollowRequest) -> AsyncIterator[bytes]:
        loop = asyncio.get_running_loop()
        deadline = loop.time() + body.streamMs / 1000
        after = body.after
        st = self.state
        if after is not None and st.primary_region == self.region:
            problem = await asyncio.to_thread(self._position_problem, after, body.afterEpoch)
            if problem:
                yield ndjson_line(
                    {**announce(st), "headLsn": st.head_lsn, "error": "Diverged", "message": problem}
                )
                return
        sent_version = -1
        last_sent = 0.0
        # Writes wait for a follower's stream to have sent them (shipping.py): it says how far it got.
        shipped = None if after is None else self.shipping.open(after)
        try:
            # A closed feed (the region is shutting down) ends the stream: the follower reconnects later.
            while loop.time() < deadline and not self.feed.closed:
                wake = self.feed.current()
                st = self.state
                serving = after is not None and st.primary_region == self.region
                changes = (
                    await asyncio.to_thread(self.store.changes, after, BATCH)
                    if serving and after is not None
                    else []
                )
                if changes or sent_version != self._version or loop.time() - last_sent >= HEARTBEAT_S:
                    head, head_ms = await asyncio.to_thread(self.store.head)
                    sent_version = self._version
                    yield ndjson_line(
                        {
                            **announce(self.state),
                            "headLsn": head,
                            "headMs": head_ms,
                            "changes": [change_json(c) for c in changes],
                        }
                    )
                    # Resumed: the server took the line for the connection; it leaves before the write's
                    # answer can (a later turn of this loop writes that, runtime/coalescing.py or not).
                    last_sent = loop.time()
                    if changes:
                        after = changes[-1].lsn
                        if shipped is not None:
                            self.shipping.sent(shipped, after)
                        continue
                # Until a commit here or elsewhere (the feed's poll), a state change, or the next heartbeat.
                await self.feed.wait(wake, max(0.0, HEARTBEAT_S - (loop.time() - last_sent)))
        finally:
            if shipped is not None:
                self.shipping.close(shipped)

    def _position_problem(self, after: int, after_epoch: int) -> str | None:
        """Why a follower at `after` (its record there of `after_epoch`) is not on this primary's lineage."""
        if after == 0:
            return None
        head, _ = self.store.head()
        if after > head:
            return (
                f"the follower is at lsn {after}, past this primary's head {head}: it holds diverged writes"
            )
        mine = self.store.epoch_at(after)
        if mine != after_epoch:
            return f"at lsn {after} the follower has a record of epoch {after_epoch}, this primary of {mine}"
        return None

    # operations ------------------------------------------------------------------------------------------

    def known_epoch(self) -> int:
        return max([self.state.epoch, *(v.epoch for v in self.views.values() if v.epoch is not None)])

    async def reachable(self) -> set[str]:
        """The regions that answer now with their state (this one included); their epochs are adopted."""

        async def ask(peer: BlogPeer) -> dict[str, Any] | None:
            try:
                return await peer.call("state", {}, timeout_s=QUORUM_TIMEOUT_S)
            except Exception:
                return None

        peers = [p for r, p in self.peers.items() if r in self.electorate()]
        answered = {self.region}
        for peer, answer in zip(peers, await asyncio.gather(*(ask(p) for p in peers)), strict=True):
            if answer is not None:
                await self.adopt_json(answer, peer.region)
                answered.add(peer.region)
        return answered

    async def _check_majority(self) -> None:
        """Refuses (Conflict) a promotion that does not reach a majority of the electorate.

        Without a majority this region may be on the small side of a partition, where the other side can
        promote too: both would take writes until they meet, and one side's would end up diverged.
        """
        electorate = self.electorate()
        reached = await self.reachable() & electorate
        if len(reached) * 2 > len(electorate):
            return
        missing = sorted(electorate - reached)
        raise errors.Conflict(
            f"promotion of the blog in {self.region} refused: it reaches {len(reached)} of the "
            f"{len(electorate)} regions named in the epoch history ({', '.join(sorted(electorate))}), "
            f"not a majority; no answer from {', '.join(missing)}. If those regions are down (not just "
            'cut off), promote with --force (CLI) or {"force": true}: a cut-off primary keeps taking '
            "writes until it meets the new epoch, and those writes then go to the diverged list"
        )

    async def promote(
        self,
        *,
        min_epoch: int = 0,
        wait_for_lsn: int | None = None,
        timeout_s: float = SWITCHOVER_TIMEOUT_S,
        force: bool = False,
    ) -> BlogState:
        """Makes this region the primary of a new epoch; with `wait_for_lsn`, once it applied that far.

        Unless `force`, it must reach a majority of the electorate first (Conflict otherwise). A region
        that already is the writable primary stays as it is (a double click promotes once).
        """
        if self.state.writable:
            return self.state
        if not force:
            await self._check_majority()
        if wait_for_lsn is not None:
            deadline = time.monotonic() + timeout_s
            while self.state.applied_lsn < wait_for_lsn:
                if self.state.role != "replica" or time.monotonic() > deadline:
                    raise errors.Unavailable(
                        f"the blog in {self.region} applied up to lsn {self.state.applied_lsn}, not "
                        f"{wait_for_lsn}, within {timeout_s:g} s; not promoted"
                    )
                await asyncio.sleep(0.005)
        async with self._lock:
            before = self.state.epoch
            state = await asyncio.to_thread(self.store.promote, max(min_epoch, self.known_epoch()))
            self.state = state
        self.confirmed.set()
        self._changed()
        if state.epoch != before:
            self.metrics.epoch_changes.labels("promoted").inc()
            log.warning(
                "region=%s event=blog_promoted epoch=%d fork_lsn=%d", self.region, state.epoch, state.head_lsn
            )
        return state

    async def switchover(self, target: str, timeout_s: float = SWITCHOVER_TIMEOUT_S) -> dict[str, Any]:
        """Planned: fence this primary, let `target` apply everything, promote it; nothing is lost."""
        if target == self.region:
            return {"from": self.region, "to": target, **self.state.json()}
        peer = self.peers.get(target)
        if peer is None:
            raise errors.ValidationError(f"unknown region {target!r}")
        async with self._lock:
            fenced = await asyncio.to_thread(self.store.fence)
            self.state = fenced
        self._changed()
        log.warning(
            "region=%s event=blog_fenced epoch=%d head=%d target=%s",
            self.region,
            fenced.epoch,
            fenced.head_lsn,
            target,
        )
        body = {"waitForLsn": fenced.head_lsn, "minEpoch": fenced.epoch, "timeoutS": timeout_s}
        try:
            promoted = await peer.call("promote", body, timeout_s=timeout_s + 5)
        except PeerRefused as exc:
            # The target answered that it did not promote: take writes again.
            async with self._lock:
                self.state = await asyncio.to_thread(self.store.unfence, fenced.epoch)
            self._changed()
            raise errors.Unavailable(
                f"switchover to {target} refused ({exc.message}); {self.region} takes writes again"
            ) from None
        except (httpx.HTTPError, errors.BookstoreError) as exc:
            # Unknown whether the target promoted: stay read-only rather than risk two primaries.
            raise errors.Unavailable(
                f"switchover to {target}: no answer ({type(exc).__name__}); {self.region} stays read-only. "
                f"Check `bookstore status`, then `bookstore blog promote` the region that should take writes"
            ) from None
        await self.adopt_json(promoted, target)
        return {"from": self.region, "to": target, "lsn": fenced.head_lsn, **self.state.json()}

    async def primary_now(self) -> str:
        """The writable primary of the highest epoch any reachable region reports (ours when none answer)."""
        best = epoch_rank(self.state.epoch, self.state.primary_region)

        async def ask(peer: BlogPeer) -> dict[str, Any] | None:
            try:
                return await peer.call("state", {}, timeout_s=3.0)
            except Exception:
                return None

        for answer in await asyncio.gather(*(ask(p) for p in self.peers.values())):
            if answer is not None:
                await self.adopt_json(answer, str(answer.get("region")))
                if isinstance(answer.get("epoch"), int):
                    best = max(best, epoch_rank(answer["epoch"], str(answer.get("primaryRegion"))))
        mine = epoch_rank(self.state.epoch, self.state.primary_region)
        return self.state.primary_region if mine >= best else best[1]

    async def rejoin(self) -> dict[str, Any]:
        """Re-syncs this region from the primary's snapshot and follows it; keeps diverged writes aside."""
        primary = await self.primary_now()
        if primary == self.region:
            if self.state.writable:
                raise errors.Conflict(f"the blog in {self.region} is the primary (epoch {self.state.epoch})")
            raise errors.Unavailable(
                "no other region answers as the primary; promote one (`bookstore blog promote REGION`)"
            )
        peer = self.peers.get(primary)
        if peer is None:
            raise errors.Unavailable(f"the primary {primary} is not a peer of {self.region}")
        state, diverged = await self._resync_from(peer, reason="operator")
        return {
            **state.json(),
            "diverged": diverged,
            "divergedTotal": await asyncio.to_thread(self.store.diverged_count),
        }

    async def _resync_from(self, peer: BlogPeer, *, reason: str) -> tuple[BlogState, int]:
        """Replaces this region's blog by `peer`'s snapshot (records not in its lineage kept as diverged)."""
        snapshot = await peer.call("snapshot", {}, timeout_s=60.0)
        async with self._lock:
            state, diverged = await asyncio.to_thread(self.store.resync, snapshot)
            self.state = state
        self._last_applied_ms = None
        self._changed()
        self.metrics.epoch_changes.labels("resynced").inc()
        log.warning(
            "region=%s event=blog_rejoined by=%s primary=%s epoch=%d head=%d diverged=%d",
            self.region,
            reason,
            peer.region,
            state.epoch,
            state.head_lsn,
            diverged,
        )
        return state, diverged

    # status ----------------------------------------------------------------------------------------------

    def status(self) -> dict[str, Any]:
        st = self.state
        now = self.clock.now_ms()
        return {
            **{k: v for k, v in st.json().items() if k != "history"},
            "headLsn": self.store.head()[0],
            "confirmed": self.confirmed.is_set(),
            "lagEntries": self.lag_entries(),
            "lagSeconds": self.lag_seconds(),
            "lag": self.lags.summary(now).get(st.primary_region),
            "diverged": self.store.diverged_count(),
            "peers": {
                r: {
                    "connected": v.connected,
                    "epoch": v.epoch,
                    "primaryRegion": v.primary,
                    "headLsn": v.head_lsn,
                    "heardMsAgo": None if v.heard_ms is None else now - v.heard_ms,
                    "error": v.error,
                }
                for r, v in self.views.items()
            },
            "history": [h.json() for h in st.history],
        }


def _with_applied(state: BlogState, lsn: int) -> BlogState:
    return BlogState(
        state.region,
        state.epoch,
        state.read_only,
        state.primary_region,
        max(state.applied_lsn, lsn),
        max(state.head_lsn, lsn),
        state.needs_rejoin,
        state.history,
    )


def build_blog_replication(
    repository: BlogRepository,
    *,
    region: str,
    peer_urls: Mapping[str, str],
    secret: str,
    clock: Clock,
    registry: CollectorRegistry | None,
    confirm_peers: Collection[str] | None = None,
    verify: ssl.SSLContext | bool = True,
    links: LinkFaults | None = None,
) -> BlogReplication:
    """A region's blog replication: `peer_urls` are the peers' API base URLs through the links
    (`verify`: the deployment's CA with TLS between hosts; `links`: its links made faulty on purpose)."""
    peers = [
        HttpBlogPeer(r, url, auth=PeerAuth(secret, region, clock, destination=r, links=links), verify=verify)
        for r, url in peer_urls.items()
        if r != region
    ]
    return BlogReplication(
        BlogStore(repository, clock),
        peers,
        clock=clock,
        metrics=BlogMetrics(registry, region),
        regions=set(peer_urls) | {region},
        confirm_peers=confirm_peers,
    )
