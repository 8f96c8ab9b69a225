"""The blog's single-primary replication across real region processes and links (issue 5's life cycle)."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from tests.support import waiting
from tests.support.regions import System, system_up

pytestmark = pytest.mark.system

EU, AP = "eu-west-1", "ap-southeast-1"
AUTHOR = "author@blog.example"
PASSWORD = "replicated-blog-password"
POSTS = "/blog/wp-json/wp/v2/posts"
# Generous bounds for a shared 2-core machine; every wait ends as soon as its condition holds.
WAIT_S = 45.0

T = TypeVar("T")


def wait_for(what: str, probe: Callable[[], T], ok: Callable[[T], bool], timeout: float = WAIT_S) -> T:
    return waiting.wait_for(what, probe, ok, timeout)


def cli(system: System, *args: str, data_dir: bool = True) -> str:
    """Run `bookstore ...` against the running system as its operator (wide, so no cell wraps)."""
    cmd = [sys.executable, "-m", "bookstore", *args, "--topology", str(system.topology_file)]
    if data_dir:
        cmd += ["--data-dir", str(system.data_dir)]
    done = subprocess.run(
        cmd, capture_output=True, text=True, timeout=120, env={**os.environ, "COLUMNS": "400"}, check=False
    )
    assert done.returncode == 0, f"bookstore {' '.join(args)} failed: {done.stdout}{done.stderr}"
    return done.stdout


def signin(api: httpx.Client) -> dict[str, str]:
    """Authorization headers of the author, signed in at `api` (waiting for the user to replicate there)."""
    r = wait_for(
        f"sign-in at {api.base_url}",
        lambda: api.post("/auth/signin", json={"email": AUTHOR, "password": PASSWORD}),
        lambda r: r.status_code == 200,
    )
    return {"Authorization": f"Bearer {r.json()['accessToken']}"}


def publish(api: httpx.Client, title: str) -> httpx.Response:
    body = {"title": title, "content": f"Written as *{title}*.", "tags": ["replication"]}
    return api.post(POSTS, json=body, headers=signin(api), timeout=30)


def titles(api: httpx.Client) -> list[str]:
    """Every post's title, newest first (the seeded dozen and ours fit one page)."""
    r = api.get(POSTS, params={"per_page": 100})
    r.raise_for_status()
    return [p["title"]["rendered"] for p in r.json()]


def blog_status(api: httpx.Client) -> dict[str, Any]:
    r = api.get("/status")
    r.raise_for_status()
    blog: dict[str, Any] = r.json()["blog"]
    return blog


def metric(api: httpx.Client, sample: str) -> float:
    text = api.get("/metrics").text
    return sum(
        s.value for family in text_string_to_metric_families(text) for s in family.samples if s.name == sample
    )


def assert_refused(api: httpx.Client, primary: str) -> None:
    """A write is refused with 503 JSON naming the primary (the first seconds of a restart may still be
    confirming epochs with the peers, which is a refusal too)."""
    r = wait_for(
        f"a refusal naming {primary} at {api.base_url}",
        lambda: publish(api, "Must be refused"),
        lambda r: r.status_code != 503 or primary in r.json()["message"],
    )
    assert r.status_code == 503, r.text
    assert r.json()["error"] == "Unavailable"
    assert "read-only replica" in r.json()["message"] and primary in r.json()["message"]


def test_the_blog_life_cycle_promotion_fencing_diverged_writes_rejoin_and_switchover(tmp_path: Path) -> None:
    with system_up(tmp_path) as system:
        try:
            life_cycle(system)
        finally:
            # Stopped through the control API: a SIGTERM to `bookstore up` alone can leave them running.
            for region in (EU, AP):
                with contextlib.suppress(AssertionError, httpx.HTTPError):
                    system.control("POST", f"/regions/{region}/stop")


def life_cycle(system: System) -> None:
    eu, ap = system.api(EU), system.api(AP)
    cli(system, "users", "add", AUTHOR, "--password", PASSWORD, "--role", "author", "--region", EU)

    # 1. A post published in Ireland shows in Singapore; Singapore is a read-only replica.
    first = publish(eu, "Published in Ireland")
    assert first.status_code == 201, first.text
    wait_for("the post in Singapore", lambda: titles(ap), lambda t: "Published in Ireland" in t)
    assert_refused(ap, EU)
    post_id = first.json()["id"]
    auth = signin(ap)
    for method, path, body in (
        ("POST", "/blog/wp-json/wp/v2/comments", {"post": post_id, "content": "A comment"}),
        ("PUT", f"{POSTS}/{post_id}", {"title": "Changed"}),
        ("DELETE", f"{POSTS}/{post_id}", None),
    ):
        r = ap.request(method, path, json=body, headers=auth)
        assert r.status_code == 503 and EU in r.json()["message"], (method, path, r.text)
    # The operator's endpoints take only requests signed with the deployment's secret.
    assert ap.post("/replication/blog/promote", json={}).status_code == 401
    page = ap.get("/blog/")
    assert page.status_code == 200 and "Read-only replica" in page.text and EU in page.text
    assert "Read-only replica" not in eu.get("/blog/").text
    status = wait_for("Singapore caught up", lambda: blog_status(ap), lambda s: s["lagEntries"] == 0)
    assert status["role"] == "replica" and status["epoch"] == 1 and status["primaryRegion"] == EU
    assert status["appliedLsn"] == blog_status(eu)["headLsn"]
    assert metric(ap, "bookstore_blog_replication_applied_total") >= 1

    # 2. During a cut of the link Ireland still takes a write, which Singapore never receives.
    system.control("POST", f"/links/{EU}/{AP}", {"cut": True, "both": True})
    lost = publish(eu, "Written in Ireland during the cut")
    assert lost.status_code == 201, lost.text

    # 3. Ireland dies; Singapore is promoted (a new epoch) and takes writes at once.
    cli(system, "region", "kill", EU)
    # With Ireland down Singapore reaches 1 of the 2 regions, no majority: refused unless forced.
    refused = subprocess.run(
        [
            sys.executable,
            "-m",
            "bookstore",
            "blog",
            "promote",
            AP,
            "--topology",
            str(system.topology_file),
            "--data-dir",
            str(system.data_dir),
        ],
        capture_output=True,
        text=True,
        timeout=120,
        check=False,
    )
    assert refused.returncode == 1 and "not a majority" in refused.stderr and "--force" in refused.stderr
    assert blog_status(ap)["role"] == "replica"
    out = cli(system, "blog", "promote", AP, "--force")
    assert "epoch 2" in out
    after = publish(ap, "Published in Singapore after the promotion")
    assert after.status_code == 201, after.text
    assert blog_status(ap)["role"] == "primary"

    # 4. Ireland comes back: it learns epoch 2 from Singapore and refuses writes; the write it took
    #    after the fork is kept aside and listed as diverged; it re-syncs from Singapore by itself.
    system.control("POST", f"/links/{EU}/{AP}", {"cut": False, "both": True})
    cli(system, "region", "start", EU)
    assert_refused(eu, AP)
    status = wait_for(
        "Ireland rejoined by itself",
        lambda: blog_status(eu),
        lambda s: s["epoch"] == 2 and s["primaryRegion"] == AP and not s["needsRejoin"],
    )
    assert status["role"] == "replica"
    listed = cli(system, "blog", "diverged", "--region", EU)
    assert "Written in Ireland during the cut" in listed
    report = json.loads(cli(system, "blog", "diverged", "--json"))
    kept = [d for d in report[EU]["diverged"] if d["table"] == "blog_posts"]
    assert [d["row"]["title"] for d in kept] == ["Written in Ireland during the cut"]
    assert kept[0]["epoch"] == 1 and kept[0]["newEpoch"] == 2 and kept[0]["newPrimary"] == AP
    assert report[AP]["diverged"] == []

    # 5. Ireland, a replica again without an operator's rejoin, converges on Singapore's posts and follows
    #    them; the diverged write stays listed. The operator's rejoin still works and changes nothing.
    expected = titles(ap)
    assert "Written in Ireland during the cut" not in expected
    wait_for("Ireland converged on Singapore", lambda: titles(eu), lambda t: t == expected)
    also = publish(ap, "Published in Singapore while Ireland follows")
    assert also.status_code == 201, also.text
    wait_for("the next post in Ireland", lambda: titles(eu), lambda t: t == titles(ap))
    out = cli(system, "blog", "rejoin", EU)
    assert f"replica of {AP}" in out
    assert not blog_status(eu)["needsRejoin"]
    assert "Written in Ireland during the cut" in cli(system, "blog", "diverged", "--region", EU)
    assert_refused(eu, AP)
    wait_for("Ireland still follows", lambda: titles(eu), lambda t: t == titles(ap))

    # 6. A planned switchover back to Ireland loses nothing.
    last = publish(ap, "The last post before the switchover")
    assert last.status_code == 201, last.text
    before = titles(ap)
    out = cli(system, "blog", "switchover", EU)
    assert f"to {EU}" in out and "epoch 3" in out
    assert titles(eu) == before
    back = publish(eu, "Published in Ireland after the switchover")
    assert back.status_code == 201, back.text
    assert_refused(ap, EU)
    wait_for("Singapore follows Ireland", lambda: titles(ap), lambda t: t == titles(eu))
    assert set(before) < set(titles(ap))

    # `bookstore status` shows the primary, the epoch and the replica with its lag.
    report = json.loads(cli(system, "status", "--json"))["blog"]
    assert report["primary"] == EU and report["epoch"] == 3
    roles = {r["regionId"]: r for r in report["regions"]}
    assert roles[EU]["role"] == "primary" and roles[AP]["role"] == "replica"
    assert roles[AP]["lagEntries"] is not None and roles[AP]["diverged"] == 0
    assert roles[EU]["diverged"] >= 1


def test_a_primary_cut_off_by_a_partition_rejoins_by_itself_when_it_heals(tmp_path: Path) -> None:
    # Issue 12 item 4 with real processes and the old primary alive throughout (no restart to help it):
    # promoted on the other side of a cut, written on both sides, healed, and no operator's rejoin.
    with system_up(tmp_path) as system:
        try:
            partition_and_heal(system)
        finally:
            for region in (EU, AP):
                with contextlib.suppress(AssertionError, httpx.HTTPError):
                    system.control("POST", f"/regions/{region}/stop")


def partition_and_heal(system: System) -> None:
    eu, ap = system.api(EU), system.api(AP)
    cli(system, "users", "add", AUTHOR, "--password", PASSWORD, "--role", "author", "--region", EU)
    assert publish(eu, "Before the partition").status_code == 201
    wait_for("the post in Singapore", lambda: titles(ap), lambda t: "Before the partition" in t)
    signin(ap)  # the author has reached Singapore too, so it can sign in there during the cut

    system.control("POST", f"/links/{EU}/{AP}", {"cut": True, "both": True})
    assert "epoch 2" in cli(system, "blog", "promote", AP, "--force")
    # Both sides take a write: Ireland has not heard of epoch 2 across the cut.
    for api, title in ((eu, "Ireland during the partition"), (ap, "Singapore during the partition")):
        r = publish(api, title)
        assert r.status_code == 201, r.text
    assert blog_status(eu)["role"] == "primary" and blog_status(eu)["epoch"] == 1

    system.control("POST", f"/links/{EU}/{AP}", {"cut": False, "both": True})
    status = wait_for(
        "Ireland a replica of Singapore by itself",
        lambda: blog_status(eu),
        lambda s: (
            s["role"] == "replica" and s["epoch"] == 2 and s["primaryRegion"] == AP and not s["needsRejoin"]
        ),
    )
    assert status["readOnly"]
    assert blog_status(ap)["role"] == "primary"
    expected = titles(ap)
    assert "Singapore during the partition" in expected and "Before the partition" in expected
    assert "Ireland during the partition" not in expected
    wait_for("both regions serve the same posts", lambda: titles(eu), lambda t: t == expected)
    # Ireland's write after the fork is kept aside, listed as diverged; Singapore has none.
    report = json.loads(cli(system, "blog", "diverged", "--json"))
    kept = [d["row"]["title"] for d in report[EU]["diverged"] if d["table"] == "blog_posts"]
    assert kept == ["Ireland during the partition"]
    assert report[AP]["diverged"] == []
    # Ireland follows: it refuses writes naming Singapore and receives Singapore's next post.
    assert_refused(eu, AP)
    assert publish(ap, "After the heal").status_code == 201
    wait_for("the next post in Ireland", lambda: titles(eu), lambda t: t == titles(ap))
