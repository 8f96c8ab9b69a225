"""Every table the command line prints (rich), and only here.

`bookstore status` (regions, replication, objects, the blog, the edge, links, credentials), `link`, the blog's
diverged writes, conflicts, a drill's summary, a global table's replicas.
"""

from __future__ import annotations

import json
import time
from collections.abc import Mapping
from typing import Any

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table
from rich.text import Text

from bookstore.drills.record import Check, Record
from bookstore.drills.text import kind_cells, number


def conflicts(records: list[dict[str, Any]]) -> None:
    """Conflicts a region saw (`bookstore conflicts`): when, where, the winning and the losing version."""
    table = Table("detected", "table", "key", "winner", "loser")
    for c in records:
        table.add_row(
            str(c["detected_ms"]),
            c["table"],
            json.dumps(c["key"]),
            str(tuple(c["winner_version"])),
            str(tuple(c["loser_version"])),
        )
    Console().print(table)


def global_replicas(report: dict[str, Any]) -> None:
    """A DynamoDB global table's replicas, a line each: table, region, status (and why, if there is one)."""
    for replica in report["replicas"]:
        detail = f" ({replica['detail']})" if "detail" in replica else ""
        typer.echo(f"{report['table']}  {replica['region']}  {replica['status']}{detail}")


def drill_summary(record: Record, console: Console | None = None) -> None:
    """The verdict, the checks (held in green, not held in red), the kinds, and where the files are."""
    console = console or Console()
    checks = record["checks"]
    held = sum(check["held"] for check in checks)
    verdict = ("PASSED", "bold green") if record["passed"] else ("FAILED", "bold red")
    console.print(
        Text.assemble(
            "Drill ", (record["scenario"], "bold"), ": ", verdict, f"  {held}/{len(checks)} checks held"
        )
    )
    # Every cell is a Text: a record's strings are shown as they are, never read as rich markup.
    table = Table("check", "value", "goal", "held", "detail", title="Checks", title_justify="left")
    for check in checks:
        table.add_row(
            Text(check["name"]),
            Text(number(check["value"], check["unit"])),
            Text(check["goal"]),
            Text("held", style="green") if check["held"] else Text("not held", style="bold red"),
            Text(_terminal_detail(check), style="dim"),
        )
    console.print(table)
    kinds = Table(
        "kind", "requests", "failed", "RTO", "p50", "p99", title="Requests by kind", title_justify="left"
    )
    for column in kinds.columns[1:]:
        column.justify = "right"
    for kind in record["kinds"]:
        kinds.add_row(*(Text(cell) for cell in kind_cells(kind)))
    console.print(kinds)
    console.print(Text.assemble(("record  ", "dim"), record["files"]["record"]))
    console.print(Text.assemble(("report  ", "dim"), record["files"]["report"]))


def _terminal_detail(check: Check, shown: int = 5) -> str:
    """The detail, and the first few of what the check listed (the record and the page hold them all)."""
    items = check.get("listed") or []
    more = f"\n… and {len(items) - shown} more in the record" if len(items) > shown else ""
    return "\n".join([check["detail"], *items[:shown]]) + more


def _fit(table: Table, *whole: int) -> Table:
    """A status table that stays readable at 80 columns: the columns `whole` (region names and ids) are
    never wrapped nor cut, no header word is broken, and a longer cell wraps rather than ends in an
    ellipsis. No outer border: its four columns of characters go to the cells."""
    table.show_edge = False
    for index, column in enumerate(table.columns):
        column.overflow = "fold"
        column.min_width = max(len(word) for word in str(column.header).split())
        if index in whole:
            column.no_wrap = True
    return table


def status(report: dict[str, Any]) -> None:
    """`bookstore status`: regions, table replication, objects, the blog, the edge, the links."""
    console = Console()
    for warning in report.get("warnings", []):
        console.print(Text(f"WARNING {warning}", style="bold red"))
    regions = _fit(Table("region", "name", "health", "conflicts", "api", title="Regions"), 0, 1)
    for r in report["regions"]:
        health = (
            "[green]healthy[/green]"
            if r["healthy"]
            else "[red]down[/red]"
            if r.get("active", True)
            else "[dim]not started[/dim]"
        )
        regions.add_row(r["regionId"], r["name"], health, _text(r["conflicts"]), r["apiUrl"])
    console.print(regions)
    pairs = _fit(
        Table(
            "from",
            "to",
            "following",
            "pending",
            "p50",
            "p99",
            "position",
            title="Table replication (lag p50/p99 in ms over the last minute; log position)",
        ),
        0,
        1,
    )
    for p in report["replication"]:
        link = "[green]yes[/green]" if p["connected"] else "[red]no[/red]"
        if p.get("followed") is False:
            held = p.get("notFollowed") or {}
            link = f"[red]no: clock {_text(held.get('offsetMs'))} ms ahead[/red]"
        pairs.add_row(
            p["source"],
            p["destination"],
            link,
            _text(p["pending"]),
            _text(p["lagP50Ms"]),
            _text(p["lagP99Ms"]),
            _text(p["checkpoint"]),
        )
    console.print(pairs)
    if report.get("native"):
        _native(report["native"])
    if report.get("objects"):
        _objects(report["objects"])
    if report.get("blog"):
        blog_overview(report["blog"])
    if report.get("edge"):
        _edge(report["edge"])
    if report["links"]:
        links(report["links"])
    elif report["supervisor"] and report["links"] == []:
        console.print('no simulated links: the regions reach each other directly (links = "direct")')
    elif not report.get("supervised", True):
        console.print(
            "no supervisor in this topology (regions on their own hosts): no links or process control"
        )
    elif not report["supervisor"]:
        console.print("[yellow]no supervisor answers: links and process control are unavailable[/yellow]")


def _native(native: dict[str, Any]) -> None:
    """DynamoDB's own replicas of each table, as each region sees them (status and CloudWatch's latency)."""
    table = Table(
        "region", "table", "replicas", "missing", title="Native replication (DynamoDB global tables)"
    )
    rows = 0
    for region, report in native.items():
        for t in report.get("tables", []):
            replicas = ", ".join(
                f"{r['region']} {r['status']}"
                + (f" {r['latencyMs']:.0f} ms" if r.get("latencyMs") is not None else "")
                for r in t.get("replicas", [])
            )
            missing = ", ".join(t.get("missing", []))
            table.add_row(
                Text(region),
                Text(t["table"]),
                Text(replicas or "-"),
                Text(missing or "-", style="red" if missing else ""),
            )
            rows += 1
    if rows:
        Console().print(table)


def _text(value: Any) -> str:
    if value is None:
        return "-"
    if isinstance(value, float):
        return f"{value:.0f}" if value >= 10 else f"{value:.1f}"
    return str(value)


def _objects(pairs: list[dict[str, Any]]) -> None:
    console = Console()
    table = _fit(
        Table(
            "from",
            "to",
            "pending",
            "p50",
            "p99",
            "done",
            "failed",
            "error",
            title="Object replication (pending at the source; p50/p99 ms from write to copy, last minute)",
        ),
        0,
        1,
    )
    for p in pairs:
        error = escape(p["lastError"] or "")
        if p["reachable"] is False:
            error = f"[red]{error or 'unreachable'}[/red]"
        table.add_row(
            p["source"],
            p["destination"],
            f"{_text(p['pendingOperations'])} ({_text(p['pendingBytes'])} B)",
            _text(p["latencyP50Ms"]),
            _text(p["latencyP99Ms"]),
            _text(p["completed"]),
            _text(p["failed"]),
            error,
        )
    console.print(table)
    for p in pairs:
        for f in p["recentFailures"]:
            what = escape(f"{f['bucket']}/{f['key']} {f['versionId']} -> {f['destination']}: {f['reason']}")
            console.print(f"[red]FAILED[/red] {what}")


def links(rows: list[dict[str, Any]]) -> None:
    """The links between regions (`bookstore link`, `bookstore status`): delay, jitter, loss, cut or up."""
    table = _fit(Table("link", "delay ms", "jitter ms", "loss", "state", title="Links"), 0)
    for link in rows:
        state = "[red]cut[/red]" if link.get("cut") else "[green]up[/green]"
        table.add_row(
            f"{link['src']} -> {link['dst']}",
            _text(link.get("delayMs")),
            _text(link.get("jitterMs")),
            _text(link.get("loss")),
            state,
        )
    Console().print(table)


def credentials(info: dict[str, Any]) -> None:
    """Where the deployment's credentials are, and the commands that use them (no secret is printed)."""
    console = Console()
    console.print("[bold]Credentials[/bold] (this deployment's own)")
    if info.get("s3AccessKeyId"):
        console.print(f"  S3 access key id {escape(info['s3AccessKeyId'])} ({escape(info['s3Credentials'])})")
    else:
        console.print(f"  no S3 credentials at {escape(info['s3Credentials'])}: not this system's data dir?")
    console.print('  eval "$(bookstore aws-env)" points the aws CLI at it with the secret key')
    console.print(
        f"  operator token in {escape(info['operatorToken'])}; rotate with `bookstore secrets rotate`"
    )
    if info.get("operatorLink"):
        console.print(f"  operator page, one-time sign-in: {escape(info['operatorLink'])}", soft_wrap=True)


def _when(ms: Any, now_ms: int) -> str:
    if not isinstance(ms, int):
        return "-"
    clock = time.strftime("%H:%M:%S", time.localtime(ms / 1000)) + f".{ms % 1000:03d}"
    return f"{clock} ({(now_ms - ms) / 1000:.1f} s ago)"


def _edge(report: dict[str, Any]) -> None:
    """Tables for `bookstore status`: targets, records' answers, counters."""

    console = Console()
    edge = report.get("edge", {})
    now = int(edge.get("nowMs") or time.time() * 1000)
    check = edge.get("healthCheck", {})
    title = (
        f"Edge {edge.get('url')} health checks (GET {check.get('path')} every {check.get('interval_s')} s, "
        f"timeout {check.get('timeout_s')} s, thresholds {check.get('failure_threshold')}/"
        f"{check.get('success_threshold')}, preset {edge.get('healthPreset')})"
    )
    targets = _fit(Table("target", "health", "since", "last check", "breaker", "changes", title=title), 0)
    for t in report.get("targets", []):
        health = {True: "[green]healthy[/green]", False: "[red]unhealthy[/red]"}.get(t["healthy"], "unknown")
        last = t.get("lastCheck") or {}
        breaker = t.get("breaker") or {}
        targets.add_row(
            t["id"],
            health,
            _when(t.get("sinceMs"), now),
            escape(str(last.get("reason", "-"))),
            f"[red]open[/red] {escape(str(breaker.get('reason') or ''))}"
            if breaker.get("open")
            else "closed",
            str(len(t.get("changes", []))),
        )
    console.print(targets)
    routing = report.get("routing", {})
    records = _fit(Table("record", "policy", "answer now", "order", title="Edge records"), 2)
    api = routing.get("records", {}).get("api", {})
    for client, order in api.get("answers", {}).items():
        records.add_row(
            f"/api (client in {client})", "latency", order[0] if order else "-", " > ".join(order)
        )
    for name in ("blog", "static"):
        rec = routing.get("records", {}).get(name, {})
        order = rec.get("order", [])
        label = "/blog" if name == "blog" else "static (origin group)"
        records.add_row(label, rec.get("policy", ""), order[0] if order else "-", " > ".join(order))
    console.print(records)
    c = report.get("counters", {})
    dns = edge.get("dns", {})
    dns_text = f"DNS {dns.get('address')} " + (
        "listening" if dns.get("listening") else f"off ({dns.get('error')})"
    )
    console.print(
        f"Edge: {c.get('requests', 0)} requests, {c.get('retries', 0)} retried, "
        f"{c.get('failovers', 0)} failed over, "
        f"{c.get('failed', 0)} failed, {c.get('refused', 0)} refused; record answer changes: "
        f"{sum(routing.get('recordFailovers', {}).values())}; {dns_text}"
    )


def blog_overview(blog: Mapping[str, Any]) -> None:
    """`bookstore status`'s table of the blog database: each region's role, epoch and lag."""
    table = _fit(
        Table(
            "region",
            "role",
            "epoch",
            "lsn",
            "lag entries",
            "lag s",
            "diverged",
            title=f"Blog database (primary {blog.get('primary') or 'none'}, epoch {blog.get('epoch')})",
        ),
        0,
    )
    for r in blog.get("regions", []):
        role = r["role"] or "[red]unreachable[/red]"
        if r.get("needsRejoin"):
            role += " [red](needs rejoin)[/red]"
        lsn = r["headLsn"] if r["role"] in ("primary", "fenced") else r["appliedLsn"]
        table.add_row(
            r["regionId"],
            role,
            "" if r["epoch"] is None else str(r["epoch"]),
            "" if lsn is None else str(lsn),
            "" if r["lagEntries"] is None else str(r["lagEntries"]),
            "" if r["lagSeconds"] is None else f"{r['lagSeconds']:.3f}",
            "" if r["diverged"] is None else str(r["diverged"]),
        )
    Console().print(table)


def blog_diverged(reports: Mapping[str, Mapping[str, Any]]) -> None:
    """`bookstore blog diverged`: each region's diverged writes, with the post's title where there is one."""
    from bookstore.replication.blog.wire import dumps

    table = Table(
        "region", "lsn", "epoch", "written", "table", "op", "key", "title / body", "kept since epoch",
        title="Diverged writes (accepted by a former primary after the fork; kept, not replicated)",
    )  # fmt: skip
    for region, report in reports.items():
        if "error" in report:
            table.add_row(region, "", "", "", "", "", "", f"[red]{escape(str(report['error']))}[/red]", "")
            continue
        for d in report.get("diverged", []):
            row = d.get("row") or {}
            what = str(row.get("title") or row.get("body") or row.get("tag") or "")[:60]
            written = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(int(d["writtenMs"]) / 1000))
            table.add_row(
                region,
                str(d["lsn"]),
                str(d["epoch"]),
                written,
                d["table"],
                d["op"],
                escape(dumps(d["pk"])),
                escape(what),
                f"{d['newEpoch']} ({d['newPrimary']})",
            )
    Console().print(table)


def cloud_plan(summary: dict[str, Any], files: list[str]) -> None:
    """`bookstore aws plan`: the stacks and what each creates, the deploy's steps, the cost drivers."""
    console = Console()
    stacks = Table("stack", "region", "resources", title="Stacks", title_justify="left")
    for stack in summary["stacks"]:
        kinds = "\n".join(f"{n} {kind.removeprefix('AWS::')}" for kind, n in stack["resources"].items())
        stacks.add_row(Text(stack["name"]), Text(stack["region"]), Text(kinds))
    console.print(stacks)
    steps = Table("step", "stacks", "parameters", title="Deploy order", title_justify="left")
    for n, step in enumerate(summary["steps"], start=1):
        steps.add_row(
            Text(f"{n}. {step['title']}"), Text(", ".join(step["stacks"])), Text(step["parameters"])
        )
    console.print(steps)
    costs = Table("cost driver", "USD/month", "basis", title="Rough monthly costs", title_justify="left")
    for cost in summary["monthlyCostDrivers"]:
        usd = "per use" if cost["usd"] is None else f"{cost['usd']:,.2f}"
        costs.add_row(Text(cost["what"]), Text(usd), Text(cost["basis"]))
    console.print(costs)
    typer.echo(
        f"Fixed costs about {summary['roughFixedMonthlyUsd']:,.0f} USD a month before traffic (rough list"
    )
    typer.echo("prices; check the AWS pricing calculator). Templates written: " + ", ".join(files))
