"""A synthetic but realistic drill record (a region outage) for the tests of the drill's report."""

from __future__ import annotations

from pathlib import Path

from bookstore.drills.record import Bucket, Check, Event, Fault, KindSummary, LagPoint, Record

HOME, OTHER = "eu-west-1", "ap-southeast-1"
RATE = 40  # requests per second of the workload
KILL_S, RESTART_S, DURATION_S = 10.0, 25.3, 35.0
HOSTILE = "<script>alert(\"drill\")</script> & 'quotes'"
MARKUP = "[bold red]not markup[/bold red]"


def region_outage_record(directory: Path) -> Record:
    """Ireland killed at 10 s and restarted at 25.3 s; about a second of failures, retried requests, lag."""
    return {
        "scenario": "region-outage",
        "description": f"kill -9 the home region, later restart it {HOSTILE}",
        "startedAt": "2025-11-28T10:20:03+00:00",
        "durationS": DURATION_S,
        "params": {"rate": float(RATE), "seed": 7, "note": HOSTILE},
        "regions": [
            {"id": HOME, "name": "Ireland", "flag": "🇮🇪"},
            {"id": OTHER, "name": "Singapore", "flag": "🇸🇬"},
        ],
        "faults": [Fault(name="kill -9", target=HOME, startS=KILL_S, endS=RESTART_S)],
        "events": events(),
        "timeline": timeline(),
        "lag": lag(),
        "kinds": kinds(),
        "checks": checks(),
        "passed": False,
        "files": {"record": str(directory / "record.json"), "report": str(directory / "report.html")},
    }


def timeline() -> list[Bucket]:
    """Ireland serves until the kill; during the second after it some fail and some are retried in
    Singapore, which serves alone until Ireland is healthy again two seconds after its restart."""
    buckets: list[Bucket] = []
    for second in range(int(DURATION_S)):
        at = float(second)
        if second < KILL_S:
            buckets.append(Bucket(atS=at, outcome="ok", region=HOME, count=RATE))
        elif second == KILL_S:
            buckets.append(Bucket(atS=at, outcome="failed", region="none", count=9))
            buckets.append(Bucket(atS=at, outcome="retried", region=OTHER, count=22))
            buckets.append(Bucket(atS=at, outcome="ok", region=HOME, count=RATE - 31))
        elif second < RESTART_S + 2:
            buckets.append(Bucket(atS=at, outcome="ok", region=OTHER, count=RATE))
        else:
            buckets.append(Bucket(atS=at, outcome="ok", region=HOME, count=RATE - 3))
            buckets.append(Bucket(atS=at, outcome="ok", region=OTHER, count=3))
    return buckets


def lag() -> list[LagPoint]:
    """About 80 ms each way, nothing while Ireland is down, a catch-up spike after its restart."""
    points: list[LagPoint] = []
    for second in range(int(DURATION_S)):
        at = second + 0.5
        down = KILL_S <= at < RESTART_S
        catch_up = 2400.0 / (1 + at - RESTART_S) if not down and at > RESTART_S else 0.0
        points.append(
            LagPoint(atS=at, source=HOME, destination=OTHER, lagMs=None if down else 82.0 + second % 3)
        )
        points.append(
            LagPoint(atS=at, source=OTHER, destination=HOME, lagMs=None if down else 79.0 + catch_up)
        )
    return points


def events() -> list[Event]:
    return [
        Event(atS=KILL_S, kind="fault", message=f"kill -9 {HOME}"),
        Event(atS=10.62, kind="health", message=f"the edge marks {HOME}'s API unhealthy"),
        Event(atS=10.64, kind="failover", message=f"/api goes to {OTHER}"),
        Event(atS=RESTART_S, kind="recovery", message=f"{HOME} restarted"),
        Event(atS=27.1, kind="health", message=f"the edge marks {HOME}'s API healthy"),
        Event(atS=31.5, kind="convergence", message="every table's digest is equal in both regions"),
        Event(atS=33.0, kind="note", message=f"operator's note {HOSTILE}"),
    ]


def kinds() -> list[KindSummary]:
    return [
        KindSummary(kind="browse", requests=700, failed=5, rtoS=0.84, p50Ms=11.5, p99Ms=212.0),
        KindSummary(kind="cart", requests=280, failed=3, rtoS=0.91, p50Ms=14.0, p99Ms=240.0),
        KindSummary(kind="checkout", requests=140, failed=0, rtoS=None, p50Ms=21.2, p99Ms=318.4),
        # Its one failure came too late for a failure-free window before the end: not shown recovered.
        KindSummary(kind="blog", requests=140, failed=1, rtoS=0.7, p50Ms=9.0, p99Ms=150.0, recovered=False),
        KindSummary(kind="static", requests=140, failed=0, rtoS=None, p50Ms=3.1, p99Ms=40.0),
    ]


def checks() -> list[Check]:
    return [
        Check(name="RTO of browse", value=0.84, unit="s", goal="<= 2 s", held=True, detail="browse"),
        Check(
            name="RPO",
            value=184.0,
            unit="ms",
            goal="<= 300 ms",
            held=True,
            detail="3 orders missing",
            listed=[
                f"k-0001 (checkout, Idempotency-Key a1, customer c1, acknowledged at 9.816 s by {HOME})",
                f"k-0002 (checkout, Idempotency-Key {HOSTILE}, customer c2, acknowledged at 9.9 s by {HOME})",
                f"k-0003 (writer, Idempotency-Key a3, customer c1, acknowledged at 9.95 s by {HOME})",
            ],
        ),
        Check(name="lost for good", value=0, unit="orders", goal="= 0", held=True, detail=MARKUP),
        Check(name="duplicate orders", value=0, unit="orders", goal="= 0", held=True, detail="by key"),
        Check(
            name="convergence after recovery",
            value=6.2,
            unit="s",
            goal="<= 5 s",
            held=False,
            detail=f"digests equal 6.2 s after the restart {HOSTILE}",
        ),
    ]
