"""One blog primary after any sequence of promotions (issue 12 item 4), regions in one process.

Epochs are ordered by (epoch, region); a promotion needs a majority of the electorate unless forced; a
restarted primary waits for every region's answer (or its timeout), not for the first failed stream.
"""

from __future__ import annotations

import asyncio
import threading
from functools import partial
from pathlib import Path

import httpx
import pytest
from starlette.applications import Starlette
from starlette.types import ASGIApp, Receive, Scope, Send

from bookstore.blog.repository import BlogRepository
from bookstore.domain import errors
from bookstore.kernel.clock import SystemClock
from bookstore.replication.blog.routes import blog_routes
from bookstore.replication.blog.state import BlogState
from bookstore.replication.blog.store import BlogStore
from bookstore.storage.sqlite.sql import SqliteSql
from tests.support.blog_peers import BlogNetwork, Region, eventually, new_post, start_region

EU, AP, US = "eu-west-1", "ap-southeast-1", "us-east-1"
THREE = (EU, AP, US)


async def start_all(tmp_path: Path, regions: tuple[str, ...], network: BlogNetwork) -> dict[str, Region]:
    nodes = {r: await start_region(tmp_path, r, regions, network, home=EU) for r in regions}
    await eventually(
        "every region confirmed", lambda: all(n.replication.confirmed.is_set() for n in nodes.values())
    )
    return nodes


async def stop_all(nodes: dict[str, Region]) -> None:
    for n in nodes.values():
        if not n.task.done():
            await n.halt()


def writable(nodes: dict[str, Region]) -> list[str]:
    return sorted(r for r, n in nodes.items() if n.replication.store.state().writable)


@pytest.mark.parametrize("ireland_meets_singapore_first", [False, True])
def test_promotions_on_both_sides_of_a_partition_end_with_one_primary(
    tmp_path: Path, ireland_meets_singapore_first: bool
) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, THREE, network)
        try:
            await nodes[EU].publish("Before the partition")
            await eventually(
                "the post everywhere",
                lambda: all(nodes[r].replication.state.applied_lsn >= 1 for r in (AP, US)),
            )
            # Every link cut; the operator promotes on two sides: both compute epoch 2.
            for r in THREE:
                network.isolate(r, THREE)
            ap = await nodes[AP].replication.promote(force=True)
            us = await nodes[US].replication.promote(force=True)
            assert (ap.epoch, us.epoch) == (2, 2)
            await nodes[EU].publish("Ireland during the partition")
            await nodes[AP].publish("Singapore during the partition")
            await nodes[US].publish("Virginia during the partition")
            assert writable(nodes) == [AP, EU, US]

            if ireland_meets_singapore_first:
                # The order a busy machine may pick: Ireland re-syncs from Singapore, the best it knows.
                network.heal(EU, AP)
                await eventually("Ireland follows Singapore", partial(_follows, nodes[EU], AP, epoch=2))
            network.heal_all()
            # (2, us-east-1) outranks (2, ap-southeast-1) and (1, eu-west-1): one primary remains, and the
            # two deposed primaries re-sync from it by themselves (no operator's rejoin).
            await eventually("one primary", lambda: writable(nodes) == [US])
            for r in (EU, AP):
                await eventually(
                    f"{r} rejoined as a replica of {US} by itself",
                    partial(_follows, nodes[r], US, epoch=2),
                )
            diverged = {
                r: [
                    (d.region, d.row["title"])
                    for d in nodes[r].replication.store.diverged()
                    if d.table == "blog_posts" and d.row
                ]
                for r in THREE
            }
            ireland, singapore = (EU, "Ireland during the partition"), (AP, "Singapore during the partition")
            assert diverged[AP] == [singapore] and diverged[US] == []
            # Ireland may have met Singapore first and re-synced from it before either heard of Virginia:
            # it then held Singapore's post too, and set it aside again on meeting (2, us-east-1). That
            # copy is right, not a flaw: Ireland held a write outside the lineage, which is kept, never
            # dropped, and it could not prefer a primary it had not heard of. Either way each
            # partition-time post but the winner's is listed where it was written.
            assert diverged[EU] in ([ireland], [ireland, singapore]), diverged
            if ireland_meets_singapore_first:
                assert diverged[EU] == [ireland, singapore]
            with pytest.raises(errors.Unavailable, match=US):
                await nodes[AP].publish("Refused")
            # A new post on the one primary reaches both: they follow it.
            await nodes[US].publish("After the heal")
            expected = await nodes[US].titles()
            assert "Singapore during the partition" not in expected
            assert expected == ["After the heal", "Before the partition", "Virginia during the partition"]
            for r in (EU, AP):
                await eventually(f"{r} converged", partial(_same, nodes[r], expected))
            assert writable(nodes) == [US]
            # The operator's rejoin still works on a region that rejoined by itself, and changes nothing.
            again = await nodes[EU].replication.rejoin()
            assert again["role"] == "replica" and again["primaryRegion"] == US and again["diverged"] == 0
            assert again["divergedTotal"] == len(diverged[EU])
            await nodes[US].publish("After the manual rejoin")
            expected = await nodes[US].titles()
            for r in (EU, AP):
                await eventually(f"{r} still follows", partial(_same, nodes[r], expected))
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def _follows(region: Region, primary: str, *, epoch: int) -> bool:
    state = region.replication.state
    return (
        state.role == "replica"
        and state.primary_region == primary
        and state.epoch == epoch
        and not state.needs_rejoin
    )


async def _same(region: Region, expected: list[str]) -> bool:
    return await region.titles() == expected


def test_a_double_promotion_and_a_retry_to_another_region_leave_one_primary(tmp_path: Path) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, THREE, network)
        try:
            # A double click: the second promotion of the same region changes nothing.
            first = await nodes[AP].replication.promote()
            again = await nodes[AP].replication.promote()
            assert (first.epoch, again.epoch) == (2, 2)
            await eventually("one primary", lambda: writable(nodes) == [AP])
            await nodes[AP].publish("Singapore, epoch 2")
            # The same request retried at another region: it learns epoch 2 from the majority it reaches
            # and promotes past it; Singapore steps down.
            retried = await nodes[US].replication.promote()
            assert retried.epoch == 3
            await eventually("one primary again", lambda: writable(nodes) == [US])
            await eventually("Singapore at epoch 3", lambda: nodes[AP].replication.state.epoch == 3)
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def test_a_promotion_without_a_majority_is_refused_unless_forced(tmp_path: Path) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, THREE, network)
        try:
            network.isolate(AP, THREE)
            with pytest.raises(errors.Conflict) as refused:
                await nodes[AP].replication.promote()
            message = refused.value.message
            assert "reaches 1 of the 3 regions" in message and "not a majority" in message
            assert "--force" in message and EU in message and US in message
            assert nodes[AP].replication.store.state().role == "replica"
            forced = await nodes[AP].replication.promote(force=True)
            assert forced.role == "primary" and forced.epoch == 2

            # Ireland down, Virginia reaches itself and Singapore... once the cut heals: 2 of 3 suffice.
            network.heal_all()
            await nodes[EU].halt()
            network.nodes.pop(EU)
            promoted = await nodes[US].replication.promote()
            assert promoted.role == "primary" and promoted.epoch == 3
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


class _AsOperator:
    """Stands in for PeerAuthMiddleware: every request is signed by the operator."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        scope.setdefault("state", {})["peer_region"] = "operator"
        await self.app(scope, receive, send)


def test_the_promote_endpoint_answers_409_without_a_majority_and_takes_force(tmp_path: Path) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, (EU, AP), network)
        try:
            app = _AsOperator(Starlette(routes=blog_routes(nodes[AP].replication)))
            async with httpx.AsyncClient(
                transport=httpx.ASGITransport(app=app), base_url="http://ap"
            ) as client:
                network.cut(EU, AP)
                refused = await client.post("/replication/blog/promote", json={})
                assert refused.status_code == 409, refused.text
                assert refused.json()["error"] == "Conflict"
                assert "not a majority" in refused.json()["message"]
                bad = await client.post("/replication/blog/promote", json={"force": "yes"})
                assert bad.status_code == 400, bad.text
                forced = await client.post("/replication/blog/promote", json={"force": True})
                assert forced.status_code == 200, forced.text
                assert forced.json()["role"] == "primary" and forced.json()["epoch"] == 2
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def test_a_restarted_deposed_primary_waits_for_every_region_not_the_first_failed_stream(
    tmp_path: Path,
) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, THREE, network)
        try:
            # Ireland (the primary) goes down; Singapore is promoted with Virginia's vote.
            await nodes[EU].halt()
            network.nodes.pop(EU)
            await nodes[AP].replication.promote()
            await eventually("Virginia learnt epoch 2", lambda: nodes[US].replication.state.epoch == 2)
            # Ireland comes back cut off from Singapore; Virginia is down too (its stream fails at once).
            network.cut(EU, AP)
            await nodes[US].halt()
            network.nodes.pop(US)
            nodes[EU] = await start_region(tmp_path, EU, THREE, network, home=EU)
            eu = nodes[EU].replication
            await eventually("Ireland's streams failed", lambda: eu.views[US].failed and eu.views[AP].failed)
            await asyncio.sleep(0.3)
            assert not eu.confirmed.is_set(), "a failed stream is no confirmation"
            # Virginia answers (at epoch 2 it learnt before going down): Ireland adopts it, never writes.
            nodes[US] = await start_region(tmp_path, US, THREE, network, home=EU)
            await eventually("Ireland learnt epoch 2", lambda: eu.state.epoch == 2)
            assert eu.state.role == "replica" and eu.state.primary_region == AP
            with pytest.raises(errors.Unavailable, match=AP):
                await nodes[EU].publish("Must be refused")
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def test_a_restarted_deposed_primary_rejoins_by_itself_keeping_its_diverged_writes(tmp_path: Path) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, THREE, network)
        try:
            await nodes[EU].publish("Before the cut")
            await eventually(
                "the post everywhere",
                lambda: all(nodes[r].replication.state.applied_lsn >= 1 for r in (AP, US)),
            )
            # Ireland, cut off, still takes a write; then it dies and Singapore is promoted (2 of 3).
            network.isolate(EU, THREE)
            await nodes[EU].publish("Ireland while cut off")
            await nodes[EU].halt()
            network.nodes.pop(EU)
            await nodes[AP].replication.promote()
            await nodes[AP].publish("Singapore, epoch 2")
            # Ireland restarts with the links healed: it adopts epoch 2, keeps its write aside and
            # re-syncs from Singapore by itself.
            network.heal_all()
            nodes[EU] = await start_region(tmp_path, EU, THREE, network, home=EU)
            await eventually(
                "Ireland rejoined as a replica of Singapore by itself",
                partial(_follows, nodes[EU], AP, epoch=2),
            )
            kept = [d.row["title"] for d in nodes[EU].replication.store.diverged() if d.row]
            assert kept == ["Ireland while cut off"]
            with pytest.raises(errors.Unavailable, match=AP):
                await nodes[EU].publish("Refused")
            await nodes[AP].publish("Singapore after the rejoin")
            expected = await nodes[AP].titles()
            assert expected == ["Before the cut", "Singapore after the rejoin", "Singapore, epoch 2"]
            await eventually("Ireland converged", lambda: _same(nodes[EU], expected))
            assert writable(nodes) == [AP]
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def test_a_restarted_primary_takes_writes_after_its_confirmation_timeout(tmp_path: Path) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, (EU, AP), network)
        try:
            await nodes[EU].halt()
            network.cut(EU, AP)
            nodes[EU] = await start_region(tmp_path, EU, (EU, AP), network, home=EU, confirm_timeout_s=0.5)
            await eventually("confirmed by the timeout", nodes[EU].replication.confirmed.is_set)
            await nodes[EU].publish("After the timeout")
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())


def test_a_resync_refuses_a_snapshot_ranked_below_the_epoch_adopted_while_it_came(tmp_path: Path) -> None:
    # Both sides of a partition promoted to epoch 2. Ireland, deposed, fetches Singapore's snapshot to
    # re-sync; before it applies it, a stream from Virginia brings (2, us-east-1), which outranks it.
    # Applying the snapshot then would take Ireland back to (2, ap-southeast-1): it must refuse.
    stores = {
        r: BlogStore(
            BlogRepository.open(SqliteSql(tmp_path / f"{r}.db"), region=r, primary_region=EU), SystemClock()
        )
        for r in THREE
    }
    stores[EU].repository.insert_post(new_post("Ireland's post"), explicit_slug=False)
    ap, us = stores[AP].promote(1), stores[US].promote(1)
    stores[AP].repository.insert_post(new_post("Singapore's post"), explicit_slug=False)
    assert stores[EU].observe(ap.epoch, AP, ap.history) is not None
    snapshot = stores[AP].snapshot()
    assert stores[EU].observe(us.epoch, US, us.history) is not None
    with pytest.raises(errors.Conflict, match="ranked below"):
        stores[EU].resync(snapshot)
    state = stores[EU].state()
    assert (state.epoch, state.primary_region, state.needs_rejoin) == (2, US, True)
    assert [d.row["title"] for d in stores[EU].diverged() if d.row] == ["Ireland's post"]
    for store in stores.values():
        store.db.close()


def test_a_state_read_that_a_promotion_overtook_does_not_take_the_region_back(tmp_path: Path) -> None:
    async def scenario() -> None:
        network = BlogNetwork()
        nodes = await start_all(tmp_path, (EU, AP), network)
        try:
            ap = nodes[AP].replication
            # A read of the stored state (a peer's GET state, the loop's start) is slow to come back; a
            # promotion runs meanwhile. The read, of the replica before it, must not be what remains.
            read, release = threading.Event(), threading.Event()
            stored = ap.store.state

            def slow_state() -> BlogState:
                state = stored()
                if not release.is_set():
                    read.set()
                    release.wait(5)
                return state

            ap.store.state = slow_state  # type: ignore[method-assign]
            reading = asyncio.create_task(ap.refresh())
            assert await asyncio.to_thread(read.wait, 5)
            promoting = asyncio.create_task(ap.promote(force=True))
            await asyncio.sleep(0.2)
            release.set()
            await asyncio.gather(reading, promoting)
            assert (ap.state.role, ap.state.epoch) == ("primary", 2), ap.state
        finally:
            await stop_all(nodes)

    asyncio.run(scenario())
