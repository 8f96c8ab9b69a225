"""Issue 13, item 1: the control API and every operator action take the operator token and refuse browsers.

The attacks: callers without the token (or with a guess), bodies a form or a `text/plain` fetch sends,
a foreign Host (what a DNS-rebound page sends), requests that say they come from a web page; then, in
Chromium, hostile pages that try every action against the control API and the edge's /edge/control
(no-cors fetches, auto-submitted forms, preflighted fetches, a DNS-rebound page that is same-origin with
the control API, a script on the shop's own origin). After each, nothing has changed: every region runs
with the same pid, no link is cut or slowed, no switch is flipped, the blog's primary is the same.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from playwright.sync_api import Browser, Page, sync_playwright

from tests.browser.storefront import LAUNCH_ARGS, launch
from tests.security.conftest import HostileSite, require_chromium
from tests.support.regions import System, system_up

pytestmark = [pytest.mark.system, pytest.mark.xdist_group("security-controls")]

EU, AP = "eu-west-1", "ap-southeast-1"
# Every action of the control API, with a body that would do harm.
CONTROL_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    (f"/regions/{AP}/kill", {}),
    (f"/regions/{EU}/stop", {}),
    (f"/api/{EU}/break", {}),
    (f"/s3/{EU}/break", {}),
    (f"/links/{EU}/{AP}", {"cut": True, "both": True}),
    (f"/links/{EU}/{AP}", {"delayMs": 5000, "both": True}),
    (f"/clock/{EU}", {"skewMs": 30000}),
    (f"/blog/promote/{AP}", {}),
]
# And every action of the edge's /edge/control, which passes them on to the control API.
EDGE_ACTIONS: list[tuple[str, dict[str, Any]]] = [
    (f"/edge/control/regions/{AP}/kill", {}),
    (f"/edge/control/api/{EU}/break", {}),
    (f"/edge/control/s3/{EU}/break", {}),
    (f"/edge/control/links/{EU}/{AP}", {"cut": True, "both": True}),
    (f"/edge/control/blog/promote/{AP}", {}),
]
# The browser's own guards against pages reaching loopback are off: what must hold is the servers'.
NO_BROWSER_GUARDS = (
    "--disable-features=LocalNetworkAccessChecks,PrivateNetworkAccessSendPreflights,"
    "PrivateNetworkAccessRespectPreflightResults,BlockInsecurePrivateNetworkRequests"
)


@pytest.fixture(scope="module")
def system(tmp_path_factory: pytest.TempPathFactory) -> Iterator[System]:
    with system_up(tmp_path_factory.mktemp("controls"), edge="") as running:
        yield running


def state(system: System) -> dict[str, Any]:
    """What an operator action changes: processes, links, fault switches, the blog's primary."""
    regions = {r["regionId"]: (r["running"], r["pid"]) for r in system.control("GET", "/regions")["regions"]}
    links = {
        f"{x['src']}>{x['dst']}": (x["cut"], x["delayMs"]) for x in system.control("GET", "/links")["links"]
    }
    blog = {}
    for region in (EU, AP):
        with system.api(region) as api:
            blog[region] = (api.get("/status").json().get("blog") or {}).get("role")
    return {
        "regions": regions,
        "links": links,
        "faults": system.control("GET", "/faults")["faults"],
        "blog": blog,
    }


def test_the_control_api_takes_only_the_operator_token_json_and_its_own_host(system: System) -> None:
    before = state(system)
    url = system.topology.control_url
    port = system.topology.control_port
    token = {"Authorization": f"Bearer {system.token}"}
    for path, body in CONTROL_ACTIONS:
        attempts = [
            (httpx.post(url + path, json=body), 401),  # no token
            (httpx.post(url + path, json=body, headers={"Authorization": "Bearer guess"}), 401),
            (
                httpx.post(
                    url + path, content=json.dumps(body), headers={**token, "Content-Type": "text/plain"}
                ),
                415,
            ),
            (httpx.post(url + path, data={"cut": "true"}, headers=token), 415),  # a form
            (httpx.post(url + path, json=body, headers={**token, "Host": f"evil.example:{port}"}), 400),
            (httpx.post(url + path, json=body, headers={**token, "Origin": "http://evil.example"}), 403),
            (httpx.post(url + path, json=body, headers={**token, "Sec-Fetch-Site": "cross-site"}), 403),
        ]
        for answer, status in attempts:
            assert answer.status_code == status, (path, answer.request.headers, answer.text)
            assert set(answer.json()) == {"error", "message"}
    # Reading is the operator's too: nothing to see without the token, or from a rebound name.
    assert httpx.get(url + "/regions").status_code == 401
    assert httpx.get(url + "/links", headers={**token, "Host": f"evil.example:{port}"}).status_code == 400
    assert state(system) == before
    # The operator's own command works, with the token from the data dir.
    shown = system.cli("link", "show")
    assert "Links" in shown.stdout
    elsewhere = system.cli(
        "link", "show", "--data-dir", str(system.data_dir.parent / "elsewhere"), check=False
    )
    assert elsewhere.returncode == 2 and "no operator token" in elsewhere.stderr


HOSTILE_PAGE = """<!doctype html><meta charset="utf-8"><title>cute cats</title><body>
<script>
const base = __BASE__;
const targets = __TARGETS__;
window.results = [];
function note(what, outcome) { window.results.push([what, outcome]); }
async function attempt(what, send) {
  try { const r = await send(); note(what, r.type === "opaque" ? "opaque" : r.status); }
  catch (e) { note(what, "blocked"); }
}
(async () => {
  let n = 0;
  for (const [path, body] of targets) {
    const url = base + path;
    const text = JSON.stringify(body);
    await attempt("no-cors " + path, () => fetch(url, { method: "POST", mode: "no-cors", body: text }));
    await attempt("json " + path, () => fetch(url, {
      method: "POST", headers: { "content-type": "application/json" }, body: text }));
    await attempt("guessed token " + path, () => fetch(url, {
      method: "POST", headers: { "content-type": "application/json", authorization: "Bearer guess" },
      body: text }));
    // A form cannot send JSON as such; enctype text/plain makes a body that parses as JSON.
    const sink = document.createElement("iframe");
    sink.name = "sink" + (++n);
    document.body.append(sink);
    const form = document.createElement("form");
    form.method = "POST"; form.action = url; form.enctype = "text/plain"; form.target = sink.name;
    const input = document.createElement("input");
    input.name = text.slice(0, -1) + (text.length > 2 ? "," : "") + '"x":"';
    input.value = '"}';
    form.append(input);
    document.body.append(form);
    form.submit();
  }
  await attempt("read regions", () => fetch(base + "/regions"));
  await attempt("read overview", () => fetch(base + "/edge/overview"));
  await new Promise((done) => setTimeout(done, 2000));  // the forms' answers
  window.done = true;
})();
</script>
"""


def hostile_script(targets: list[tuple[str, dict[str, Any]]], base: str) -> str:
    """A page whose script tries each action in every way a page can send without the server's consent."""
    return HOSTILE_PAGE.replace("__BASE__", json.dumps(base)).replace("__TARGETS__", json.dumps(targets))


def run_page(browser: Browser, url: str, sent: list[str], route: tuple[str, str] | None = None) -> list[Any]:
    """Open `url` in a fresh profile (`route`: serve that URL's document from memory); wait for its
    script to finish; return what it noted. Every request it made is appended to `sent`."""
    context = browser.new_context()
    try:
        page: Page = context.new_page()
        page.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
        if route is not None:
            document_url, html = route

            def fulfil(r: Any) -> None:
                r.fulfill(status=200, content_type="text/html", body=html)

            page.route(document_url, fulfil)
        page.goto(url)
        page.wait_for_function("window.done === true", timeout=60_000)
        results: list[Any] = page.evaluate("window.results")
        return results
    finally:
        context.close()


@pytest.mark.browser
def test_hostile_pages_in_chromium_press_every_button_and_nothing_changes(
    system: System, hostile_site: HostileSite
) -> None:
    require_chromium()
    before = state(system)
    topology = system.topology
    control_port, edge = topology.control_port, topology.edge
    sent: list[str] = []
    rules = (
        f"--host-resolver-rules=MAP rebind.example {topology.control_address}, "
        f"MAP rebind-edge.example {edge.address}"
    )
    with sync_playwright() as playwright:
        browser = launch(playwright, args=[*LAUNCH_ARGS, rules, NO_BROWSER_GUARDS])
        try:
            # A page of another origin: against the control API, then against the edge.
            page = hostile_site.serve("/cats", hostile_script(CONTROL_ACTIONS, topology.control_url))
            run_page(browser, page, sent)
            page = hostile_site.serve("/dogs", hostile_script(EDGE_ACTIONS, edge.url))
            run_page(browser, page, sent)
            # DNS rebinding: the page's own name now resolves to the control API (or the edge), so its
            # requests are same-origin; only the Host they name gives them away.
            for name, port, targets in (
                ("rebind.example", control_port, CONTROL_ACTIONS),
                ("rebind-edge.example", edge.port, EDGE_ACTIONS),
            ):
                document = f"http://{name}:{port}/"
                answers = run_page(browser, document, sent, (document, hostile_script(targets, "")))
                refused = {status for what, status in answers if not what.startswith("read overview")}
                assert refused and refused <= {400, 403}, answers
            # A script on the shop's own origin (what a file in its bucket could be): same-origin with
            # /edge/control, it holds neither the token nor a session.
            context = browser.new_context()
            shop = context.new_page()
            shop.on("request", lambda r: sent.append(f"{r.method} {r.url}"))
            shop.goto(edge.url + "/")
            for path, body in EDGE_ACTIONS:
                status = shop.evaluate(
                    """([path, body]) => fetch(path, { method: "POST",
                        headers: { "content-type": "application/json" }, body: JSON.stringify(body) })
                        .then((r) => r.status)""",
                    [path, body],
                )
                assert status == 401, path
            assert shop.evaluate("fetch('/edge/overview').then((r) => r.status)") == 401
            context.close()
        finally:
            browser.close()
    # The attacks were sent (the page did not just fail to load)...
    assert (
        sum(1 for s in sent if f":{control_port}/" in s and s.startswith("POST")) >= len(CONTROL_ACTIONS) * 2
    )
    assert sum(1 for s in sent if "/edge/control/" in s and s.startswith("POST")) >= len(EDGE_ACTIONS) * 2
    # ...and nothing changed.
    assert state(system) == before
