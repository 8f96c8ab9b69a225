"""Blog posts racing a kill -9 of their primary, on separate hosts: acknowledged posts the replica never got.

What the blog-failover drill does by chance when a loaded machine delays its start-up past its fault
time (the kill then goes out with the first posts), done on purpose and repeated. Two regions in
network namespaces of their own (tests.support.layouts' hosts layout; root and `ip netns` needed). Each
trial: once ap-southeast-1 follows eu-west-1 and has caught up, POSTS posts go to eu-west-1 together
with its agent's kill; 1.5 s later every post eu-west-1 acknowledged (201) must be in ap-southeast-1
(nothing is promoted, so it holds exactly what eu-west-1 sent before it died); then eu-west-1 is
started again, still the primary. Prints one JSON line per trial and the totals; writes nothing.

    python -m bench.blog_kill_race --trials 15 --posts 6 [--dir DIR]

Run another tree's code with PYTHONPATH=TREE/src:TREE (the regions inherit it).
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from pathlib import Path

import httpx
from tests.support.layouts import AP, EU, HOSTS, Deployment, Layout

from bookstore.drills.observe import posts_of
from bookstore.kernel.clock import SystemClock
from bookstore.runtime.agents import agent_call
from bookstore.runtime.secret import operator_secret

PASSWORD = "kill race password"
API = "/blog/wp-json/wp/v2/posts"
SETTLE_S = 1.5


async def following(ap_url: str) -> None:
    """Until ap-southeast-1's stream from eu-west-1 is connected and caught up: a follower that is not
    connected holds no write, and a post acknowledged then is not what this measures."""
    deadline = time.monotonic() + 30
    async with httpx.AsyncClient(timeout=5) as client:
        while time.monotonic() < deadline:
            blog = (await client.get(f"{ap_url}/status")).json().get("blog") or {}
            peer = (blog.get("peers") or {}).get(EU) or {}
            if peer.get("connected") and blog.get("lagEntries") == 0:
                return
            await asyncio.sleep(0.1)
    raise SystemExit("ap-southeast-1 did not follow eu-west-1 again within 30 s")


async def trials(d: Deployment, count: int, posts: int) -> dict[str, int]:
    eu, ap = d.topology.region(EU), d.topology.region(AP)
    email = f"author-{os.urandom(3).hex()}@example.com"
    d.cli("users", "add", email, "--password", PASSWORD, "--role", "author")
    async with httpx.AsyncClient(base_url=eu.api_url, timeout=10) as client:
        signed = await client.post("/auth/signin", json={"email": email, "password": PASSWORD})
    headers = {"Authorization": f"Bearer {signed.json()['accessToken']}"}
    secret, clock = operator_secret(d.data_dir), SystemClock()
    totals = {"trials": count, "acknowledged": 0, "missing": 0}
    await following(ap.api_url)
    for trial in range(count):
        tag = f"race-{os.urandom(3).hex()}"
        async with httpx.AsyncClient(base_url=eu.api_url, timeout=5) as client:
            await client.get("/health")  # the connection is open before the race

            async def post(k: int, client: httpx.AsyncClient = client, tag: str = tag) -> tuple[str, int]:
                title = f"Race {tag} {k}"
                body = {"title": title, "content": "racing the kill", "tags": [tag]}
                try:
                    return title, (await client.post(API, json=body, headers=headers)).status_code
                except httpx.HTTPError:
                    return title, 0

            async def kill() -> None:
                await asyncio.sleep(0.002)
                await agent_call(eu, "kill", secret, clock, verify=False)

            killing = asyncio.create_task(kill())
            answers = await asyncio.gather(*(post(k) for k in range(posts)))
            await killing
        acknowledged = [title for title, status in answers if status == 201]
        await asyncio.sleep(SETTLE_S)
        held = await posts_of(ap.api_url, tag)
        missing = [t for t in acknowledged if held is None or t not in held]
        totals["acknowledged"] += len(acknowledged)
        totals["missing"] += len(missing)
        print(json.dumps({"trial": trial, "acknowledged": len(acknowledged), "missing": missing}), flush=True)
        await agent_call(eu, "start", secret, clock, verify=False)
        await following(ap.api_url)
    return totals


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--trials", type=int, default=15)
    parser.add_argument("--posts", type=int, default=6)
    parser.add_argument("--dir", type=Path, default=None, help="where the hosts' data and logs go")
    args = parser.parse_args()
    folder = args.dir or Path(tempfile.mkdtemp(prefix="blog-kill-race-"))
    folder.mkdir(parents=True, exist_ok=True)
    with Layout(HOSTS).up(folder, regions=(EU, AP)) as d:
        totals = asyncio.run(trials(d, args.trials, args.posts))
    print(json.dumps({"totals": totals, "dir": str(folder)}), flush=True)


if __name__ == "__main__":
    main()
