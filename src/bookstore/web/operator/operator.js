// The operator page: polls the edge's overview, draws regions, links, lag and conflicts, and sends the
// edge's control calls (break/repair an API, kill/stop/start a region, cut/heal a link, promote the blog).
// It signs in by a deliberate step: a one-time link (#login=CODE) whose code the edge redeems for a
// session, kept in this tab's sessionStorage and sent as a bearer token; no other tab or page has it.

const OVERVIEW = "/edge/overview";
const CONTROL = "/edge/control";
const LOGIN = "/edge/login";
const SESSION_KEY = "bookstore.operator.session";
const POLL_MS = 1000;
const MAX_EVENTS = 60;
// Where to draw a region when the overview gives no location: (latitude, longitude).
const KNOWN_PLACES = {
  "eu-west-1": [53.3, -6.3],
  "ap-southeast-1": [1.35, 103.8],
  "us-east-1": [38.9, -77.4],
};

// ----- building the page from data (text nodes only) -----

const SVG_NS = "http://www.w3.org/2000/svg";

function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  setAttrs(el, attrs);
  add(el, children);
  return el;
}

function s(tag, attrs = {}, ...children) {
  const el = document.createElementNS(SVG_NS, tag);
  setAttrs(el, attrs);
  add(el, children);
  return el;
}

function setAttrs(el, attrs) {
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") el.addEventListener(name.slice(2), value);
    else el.setAttribute(name, value === true ? "" : String(value));
  }
}

function add(el, children) {
  for (const c of children.flat(Infinity)) {
    if (c === null || c === undefined || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
}

function fill(el, ...children) {
  el.replaceChildren();
  add(el, children);
}

const $ = (id) => document.getElementById(id);
const ms = (v) => (v === null || v === undefined ? "–" : v >= 100 ? `${Math.round(v)} ms` : `${Number(v).toFixed(1)} ms`);
const num = (v) => (v === null || v === undefined ? "–" : String(v));
const clock = (atMs) => new Date(atMs).toLocaleTimeString("en-GB");

// Flags drawn here, so the page needs nothing from the storefront's bucket.
function flag(regionId) {
  const box = { viewBox: "0 0 30 20", width: 30, height: 20, class: "flag", "aria-hidden": "true" };
  if (regionId === "eu-west-1") {
    return s("svg", box, s("rect", { width: 10, height: 20, fill: "#169b62" }), s("rect", { x: 10, width: 10, height: 20, fill: "#fff" }), s("rect", { x: 20, width: 10, height: 20, fill: "#ff883e" }));
  }
  if (regionId === "ap-southeast-1") {
    return s("svg", box, s("rect", { width: 30, height: 20, fill: "#fff" }), s("rect", { width: 30, height: 10, fill: "#ef3340" }), s("circle", { cx: 6.5, cy: 5, r: 3.5, fill: "#fff" }), s("circle", { cx: 8, cy: 5, r: 3.5, fill: "#ef3340" }));
  }
  if (regionId === "us-east-1") {
    return s("svg", box, s("rect", { width: 30, height: 20, fill: "#b22234" }), ...[1, 3, 5].map((i) => s("rect", { y: i * 20 / 7, width: 30, height: 20 / 7, fill: "#fff" })), s("rect", { width: 12, height: 11, fill: "#3c3b6e" }));
  }
  return s("svg", box, s("rect", { width: 30, height: 20, fill: "#8a97a5" }));
}

// ----- the overview, read into one model -----

/** The edge's overview as the page draws it; tolerant of missing parts (a region down, say). */
function model(o) {
  const processes = new Map((o.processes || []).map((p) => [p.regionId, p]));
  const status = new Map((o.regions || []).map((r) => [r.regionId, r]));
  const targets = new Map();
  for (const t of (o.edge && o.edge.targets) || o.targets || []) targets.set(t.id || `${t.kind}:${t.regionId}`, t);
  // The supervisor's fault switches when the overview carries them ({regionId: {api: "broken"|"ok"}}).
  const faults = (o.faults && (o.faults.faults || o.faults)) || {};
  const blogRegions = new Map(((o.blog && o.blog.regions) || []).map((b) => [b.regionId, b]));
  const ids = [...new Set([...processes.keys(), ...status.keys()])];
  const regions = ids.map((id) => {
    const p = processes.get(id) || {};
    const r = status.get(id) || {};
    const api = targets.get(`api:${id}`);
    const b = blogRegions.get(id) || {};
    return {
      id,
      name: r.name || p.name || id,
      location: r.location || p.location || KNOWN_PLACES[id] || [0, 0],
      running: p.running === undefined ? null : p.running,
      exitCode: p.exitCode,
      reachable: r.healthy === undefined ? null : r.healthy,
      apiHealthy: api ? api.healthy : r.apiHealthy ?? null,
      breakerOpen: api && api.breaker ? api.breaker.open : false,
      apiReason: api && api.lastCheck ? api.lastCheck.reason : null,
      // Known from the switches, else read from the health check: a broken API answers 403 to /books.
      apiBroken: faults[id] ? faults[id].api === "broken" : api && api.lastCheck && api.lastCheck.status === 403 ? true : null,
      conflicts: r.conflicts,
      blogRole: b.role || null,
      blogLagS: b.lagSeconds,
      blogReachable: b.reachable,
    };
  });
  const pairs = new Map((o.replication || []).map((p) => [`${p.source}>${p.destination}`, p]));
  const links = (o.links || []).map((l) => {
    const lag = pairs.get(`${l.src}>${l.dst}`) || {};
    return { ...l, lagP50: lag.lagP50Ms, lagP99: lag.lagP99Ms, pending: lag.pending, following: lag.connected, held: lag.followed === false ? (lag.notFollowed || {}) : null };
  });
  const routing = (o.edge && o.edge.routing) || o.routing || {};
  const answers = routing.answers || {};
  const apiAnswer = answers[`api@${routing.defaultClientRegion}`] || Object.entries(answers).find(([k]) => k.startsWith("api@"))?.[1] || null;
  return {
    regions,
    links,
    objects: o.objects || [],
    blog: o.blog || null,
    conflicts: (o.conflicts || (o.regions || []).flatMap((r) => (r.recentConflicts || []).map((c) => ({ regionId: r.regionId, ...c }))))
      .sort((a, b) => (b.detectedMs || 0) - (a.detectedMs || 0)),
    apiAnswer,
    blogAnswer: answers.blog || (o.blog && o.blog.primary) || null,
    changes: [...(routing.answerChanges || [])],
    targets: [...targets.values()],
  };
}

// ----- the map -----

/** Screen positions of the regions: their places on an equirectangular map, fitted into a W x H drawing. */
function layout(regions, W, H) {
  const raw = regions.map((r) => [(r.location[1] + 180) / 360, (90 - r.location[0]) / 180]);
  const xs = raw.map((p) => p[0]);
  const ys = raw.map((p) => p[1]);
  const [x0, x1, y0, y1] = [Math.min(...xs), Math.max(...xs), Math.min(...ys), Math.max(...ys)];
  const box = { w: W * (W < 600 ? 0.5 : 0.72), h: H * 0.42, cx: W / 2, cy: H * 0.53 };
  const scale = Math.min(box.w / Math.max(x1 - x0, 1e-9), box.h / Math.max(y1 - y0, 1e-9));
  const [mx, my] = [(x0 + x1) / 2, (y0 + y1) / 2];
  return new Map(regions.map((r, i) => [r.id, [box.cx + (raw[i][0] - mx) * scale, box.cy + (raw[i][1] - my) * scale]]));
}

function regionState(r) {
  if (r.running === false || r.reachable === false) return "down";
  if (r.apiBroken || r.apiHealthy === false || r.breakerOpen) return "warn";
  return "ok";
}

function drawMap(m) {
  const svg = $("map");
  // A phone gets a taller, narrower drawing, so its words stay readable.
  const narrow = svg.clientWidth > 0 && svg.clientWidth < 600;
  const [W, H] = narrow ? [420, 520] : [1000, 420];
  svg.setAttribute("viewBox", `0 0 ${W} ${H}`);
  const keep = [...svg.querySelectorAll("title, desc")];
  svg.replaceChildren(...keep);
  const grid = s("g", { class: "graticule" });
  for (let x = 50; x < W; x += 100) grid.append(s("line", { x1: x, y1: 0, x2: x, y2: H }));
  for (let y = 20; y < H; y += 100) grid.append(s("line", { x1: 0, y1: y, x2: W, y2: y }));
  svg.append(grid);

  const at = layout(m.regions, W, H);
  const edgeAt = [W / 2, 40];
  let row = 0;
  const linksLayer = s("g", {});
  const drawn = new Set();
  for (const l of m.links) {
    const a = at.get(l.src);
    const b = at.get(l.dst);
    if (!a || !b) continue;
    const key = [l.src, l.dst].sort().join("|");
    const back = m.links.find((x) => x.src === l.dst && x.dst === l.src);
    const mid = [(a[0] + b[0]) / 2, (a[1] + b[1]) / 2 + 50];
    if (!drawn.has(key)) {
      drawn.add(key);
      const cut = l.cut || (back && back.cut);
      const slow = Math.max(l.delayMs || 0, (back && back.delayMs) || 0) > 200;
      linksLayer.append(s("path", { d: `M${a[0]},${a[1]} Q${mid[0]},${mid[1]} ${b[0]},${b[1]}`, class: `link ${cut ? "cut" : slow ? "slow" : ""}` }));
    }
    // The curve's middle; one direction's lag above it, the other's below.
    // Beside the curve's middle, away from the edge's arrow (on a phone: below the drawing).
    const x = narrow ? W / 2 : (a[0] + 2 * mid[0] + b[0]) / 4 - 18;
    const y = narrow ? H - 44 + 20 * row++ : (a[1] + 2 * mid[1] + b[1]) / 4 + (l.src < l.dst ? -8 : 16);
    const text = `${l.src} → ${l.dst}: ${l.cut ? "cut" : `lag ${ms(l.lagP50)}`}`;
    linksLayer.append(s("text", { x, y, class: `link-label ${l.cut ? "cut" : ""}`, "text-anchor": narrow ? "middle" : "end" }, text));
  }
  svg.append(linksLayer);

  // The edge, and an arrow to the region its API record answers for the default client.
  const edge = s("g", { class: "edge" });
  edge.append(s("defs", {}, s("marker", { id: "arrow", viewBox: "0 0 10 10", refX: 8, refY: 5, markerWidth: 6, markerHeight: 6, orient: "auto-start-reverse" }, s("path", { d: "M0,0 L10,5 L0,10 z", class: "route-head" }))));
  if (m.apiAnswer && at.has(m.apiAnswer)) {
    const [x, y] = at.get(m.apiAnswer);
    const len = Math.hypot(x - edgeAt[0], y - edgeAt[1]) || 1;
    const stop = 24 / len;
    edge.append(s("line", { x1: edgeAt[0], y1: edgeAt[1] + 16, x2: x - (x - edgeAt[0]) * stop, y2: y - (y - edgeAt[1]) * stop, class: "route", "marker-end": "url(#arrow)" }));
  }
  edge.append(
    s("rect", { x: edgeAt[0] - 100, y: edgeAt[1] - 17, width: 200, height: 34, rx: 17, class: "edge-box" }),
    s("text", { x: edgeAt[0], y: edgeAt[1] + 5, "text-anchor": "middle", class: "edge-text" }, "edge: API, CDN, DNS"),
  );
  svg.append(edge);

  for (const r of m.regions) {
    const [x, y] = at.get(r.id);
    const state = regionState(r);
    const words = { ok: "healthy", warn: r.apiBroken ? "API broken" : "API unhealthy", down: "down" }[state];
    svg.append(
      s("g", { class: `region ${state}`, transform: `translate(${x},${y})` },
        s("circle", { r: 18, class: "halo" }),
        s("circle", { r: 10, class: "core" }),
        s("text", { y: 40, "text-anchor": "middle", class: "region-name" }, `${r.name} · ${words}`),
        s("text", { y: 58, "text-anchor": "middle", class: "region-id" }, `${r.id}${r.blogRole === "primary" ? " · blog primary" : ""}`),
      ),
    );
  }
}

// ----- panels -----

function chip(kind, text) {
  return h("span", { class: `chip ${kind}` }, text);
}

function button(label, action, attrs = {}) {
  const b = h("button", { type: "button", ...attrs }, label);
  b.addEventListener("click", async () => {
    b.disabled = true;
    try {
      await action();
    } finally {
      b.disabled = false;
    }
  });
  return b;
}

function drawRegions(m) {
  fill($("regions"), m.regions.map((r) => {
    const process = r.running === null ? chip("muted", "process unknown") : r.running ? chip("ok", "running") : chip("down", r.exitCode === -9 || r.exitCode === 137 ? "killed" : "stopped");
    const api = r.apiBroken ? chip("warn", "API broken") : r.apiHealthy === false ? chip("down", "API unhealthy") : r.apiHealthy ? chip("ok", "API healthy") : chip("muted", "API unchecked");
    const blog = r.blogRole ? chip(r.blogRole === "primary" ? "info" : "muted", r.blogRole === "primary" ? "blog primary" : `blog ${r.blogRole}${r.blogLagS != null ? `, ${r.blogLagS.toFixed(1)} s behind` : ""}`) : null;
    const served = m.apiAnswer === r.id ? chip("route", "answers API calls") : null;
    return h("article", { class: `region-card ${regionState(r)}`, "aria-labelledby": `rn-${r.id}`, "data-region": r.id },
      h("h3", { id: `rn-${r.id}` }, flag(r.id), ` ${r.name} `, h("span", { class: "muted" }, r.id)),
      h("p", { class: "chips" }, process, api, blog, served),
      r.apiReason && r.apiHealthy === false ? h("p", { class: "reason" }, `Last check: ${r.apiReason}`) : null,
      h("p", { class: "muted small" }, `Conflicts seen: ${num(r.conflicts)}`),
      h("div", { class: "buttons" },
        button("Break API", () => control(`api/${r.id}/break`, null, `Break ${r.name}'s API`), { class: "danger", disabled: r.apiBroken === true, "aria-label": `Break ${r.name}'s API` }),
        button("Repair API", () => control(`api/${r.id}/repair`, null, `Repair ${r.name}'s API`), { disabled: r.apiBroken === false, "aria-label": `Repair ${r.name}'s API` }),
        button("Kill", () => control(`regions/${r.id}/kill`, null, `Kill ${r.name}`), { class: "danger", disabled: r.running === false, "aria-label": `Kill ${r.name}` }),
        button("Stop", () => control(`regions/${r.id}/stop`, null, `Stop ${r.name}`), { disabled: r.running === false, "aria-label": `Stop ${r.name}` }),
        button("Start", () => control(`regions/${r.id}/start`, null, `Start ${r.name}`), { disabled: r.running === true, "aria-label": `Start ${r.name}` }),
        button("Promote blog", () => control(`blog/promote/${r.id}`, null, `Promote the blog in ${r.name}`), { disabled: r.blogRole === "primary", "aria-label": `Promote the blog in ${r.name}` }),
      ),
    );
  }));
}

function drawLinks(m) {
  if (!m.links.length) {
    fill($("links"), h("p", { class: "muted" }, "No links reported (the supervisor does not answer)."));
    return;
  }
  const done = new Set();
  const rows = [];
  for (const l of m.links) {
    const pair = [l.src, l.dst].sort();
    const key = pair.join("|");
    const first = !done.has(key);
    done.add(key);
    const delay = h("input", { type: "number", min: 0, max: 10000, step: 5, value: Math.round(l.delayMs || 0), "aria-label": `Delay from ${l.src} to ${l.dst} in milliseconds`, class: "delay" });
    rows.push(h("tr", { "data-link": `${l.src}>${l.dst}` },
      h("th", { scope: "row" }, `${l.src} → ${l.dst}`),
      h("td", {}, l.cut ? chip("down", "cut") : chip("ok", "up"),
        // The destination stopped following the source: its clock (or a change it sent) is too far ahead.
        l.held ? [" ", h("span", { class: "chip warn", title: l.held.reason || "" }, `not followed: clock ${((l.held.offsetMs || 0) / 1000).toFixed(1)} s ahead`)] : null),
      h("td", {}, delay, " ", button("Set", () => control(`links/${l.src}/${l.dst}`, { delayMs: Number(delay.value), both: false }, `Set the delay ${l.src} → ${l.dst} to ${delay.value} ms`), { class: "small", "aria-label": `Set the delay from ${l.src} to ${l.dst}` })),
      h("td", {}, ms(l.lagP50), " / ", ms(l.lagP99)),
      h("td", {}, num(l.pending)),
      h("td", {}, first
        ? h("div", { class: "buttons" },
            button("Cut both ways", () => control(`links/${pair[0]}/${pair[1]}`, { cut: true, both: true }, `Cut the link ${pair[0]} ⇄ ${pair[1]}`), { class: "danger small", "aria-label": `Cut the link ${pair[0]} ⇄ ${pair[1]}` }),
            button("Heal", () => control(`links/${pair[0]}/${pair[1]}`, { cut: false, both: true }, `Heal the link ${pair[0]} ⇄ ${pair[1]}`), { class: "small", "aria-label": `Heal the link ${pair[0]} ⇄ ${pair[1]}` }))
        : null),
    ));
  }
  fill($("links"), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Direction"), h("th", { scope: "col" }, "Link"), h("th", { scope: "col" }, "Delay (ms)"),
      h("th", { scope: "col" }, "Table lag p50 / p99"), h("th", { scope: "col" }, "Pending"), h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Actions")))),
    h("tbody", {}, rows))));
}

function drawObjects(m) {
  if (!m.objects.length) {
    fill($("objects"), h("p", { class: "muted" }, "No object replication reported."));
    return;
  }
  fill($("objects"), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ...["Source → destination", "Pending", "Completed", "Failed", "Last error"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, m.objects.map((o) => h("tr", {},
      h("th", { scope: "row" }, `${o.source} → ${o.destination}`),
      h("td", {}, o.pendingOperations ? chip("warn", `${o.pendingOperations} (${o.pendingBytes} B)`) : "0"),
      h("td", {}, num(o.completed)),
      h("td", {}, o.failed ? chip("down", String(o.failed)) : "0"),
      h("td", { class: "small" }, o.lastError || "–")))))));
}

function drawBlog(m) {
  const blog = m.blog;
  if (!blog || !blog.regions) {
    fill($("blog"), h("p", { class: "muted" }, "No blog state reported."));
    return;
  }
  fill($("blog"),
    h("p", {}, "Primary: ", h("strong", {}, blog.primary || "none"), ` · epoch ${num(blog.epoch)}`, m.blogAnswer ? ` · the edge sends /blog/ to ${m.blogAnswer}` : ""),
    h("div", { class: "scroll" }, h("table", {},
      h("thead", {}, h("tr", {}, ...["Region", "Role", "Lag", "Diverged", "Reachable"].map((c) => h("th", { scope: "col" }, c)))),
      h("tbody", {}, blog.regions.map((b) => h("tr", {},
        h("th", { scope: "row" }, b.regionId),
        h("td", {}, b.role === "primary" ? chip("info", "primary") : b.role || "–"),
        h("td", {}, b.lagSeconds == null ? "–" : `${b.lagSeconds.toFixed(1)} s (${num(b.lagEntries)} entries)`),
        h("td", {}, b.diverged ? chip("warn", String(b.diverged)) : "0"),
        h("td", {}, b.reachable === false ? chip("down", "no") : "yes")))))));
}

function drawConflicts(m) {
  if (!m.conflicts.length) {
    fill($("conflicts"), h("p", { class: "muted" }, "No conflicts: no two regions have written the same item at the same time. Cut the link and change one cart on both sides to make one."));
    return;
  }
  fill($("conflicts"), h("div", { class: "scroll" }, h("table", {},
    h("thead", {}, h("tr", {}, ...["When", "Seen in", "Table", "Key", "Winner", "Loser"].map((c) => h("th", { scope: "col" }, c)))),
    h("tbody", {}, m.conflicts.slice(0, 20).map((c) => h("tr", {},
      h("td", {}, c.detectedMs ? clock(c.detectedMs) : "–"),
      h("td", {}, c.regionId || c.region || "–"),
      h("td", {}, c.table || "–"),
      h("td", { class: "small" }, typeof c.key === "string" ? c.key : JSON.stringify(c.key)),
      h("td", { class: "small" }, JSON.stringify(c.winner ?? c.winnerVersion ?? "")),
      h("td", { class: "small" }, JSON.stringify(c.loser ?? c.loserVersion ?? ""))))))));
}

// ----- what happened: the edge's changes, state changes seen here, and the operator's actions -----

const events = [];
const seenChanges = new Set();
let previous = null;

function logEvent(atMs, text, kind = "info") {
  events.push({ atMs, text, kind });
  events.sort((a, b) => b.atMs - a.atMs);
  events.length = Math.min(events.length, MAX_EVENTS);
  fill($("events"), events.map((e) => h("li", { class: e.kind }, h("time", {}, clock(e.atMs)), " ", e.text)));
}

function noteChanges(m) {
  if (previous === null) logEvent(Date.now(), "Watching the system through the edge.", "info");
  for (const t of m.targets) {
    for (const c of t.changes || []) {
      const key = `${t.id}|${c.atMs}|${c.healthy}`;
      if (seenChanges.has(key)) continue;
      seenChanges.add(key);
      logEvent(c.atMs, `Health check ${t.id}: ${c.healthy ? "healthy" : "unhealthy"}${c.reason ? ` (${c.reason})` : ""}`, c.healthy ? "ok" : "down");
    }
  }
  for (const c of m.changes) {
    const key = `${c.atMs}|${c.record}|${c.to}`;
    if (seenChanges.has(key)) continue;
    seenChanges.add(key);
    logEvent(c.atMs, `Edge: ${c.record} now answers ${c.to || "nobody"} (was ${c.from || "nobody"})`, "warn");
  }
  if (previous) {
    const before = new Map(previous.regions.map((r) => [r.id, r]));
    for (const r of m.regions) {
      const was = before.get(r.id);
      if (!was) continue;
      if (was.running !== r.running && r.running !== null) logEvent(Date.now(), `${r.name}: process ${r.running ? "running" : "not running"}`, r.running ? "ok" : "down");
      if (was.blogRole !== r.blogRole && r.blogRole) logEvent(Date.now(), `${r.name}: blog ${r.blogRole}`, "info");
    }
    for (const l of m.links) {
      const was = previous.links.find((x) => x.src === l.src && x.dst === l.dst);
      if (was && was.cut !== l.cut) logEvent(Date.now(), `Link ${l.src} → ${l.dst} ${l.cut ? "cut" : "healed"}`, l.cut ? "down" : "ok");
    }
  }
  previous = m;
}

// ----- signing in -----

/** The session of this tab, or null when there is none (or it expired). */
function session() {
  try {
    const s = JSON.parse(sessionStorage.getItem(SESSION_KEY));
    if (s && typeof s.token === "string" && s.expiresAtMs > Date.now()) return s.token;
  } catch {
    // nothing usable stored
  }
  return null;
}

function authorized(headers = {}) {
  return { ...headers, authorization: `Bearer ${session()}` };
}

class SignedOut extends Error {}

/** Show the sign-in panel instead of the dashboard, saying why. */
function signedOut(reason) {
  sessionStorage.removeItem(SESSION_KEY);
  document.body.classList.add("signed-out");
  $("signin").hidden = false;
  fill($("signin-reason"), reason);
  $("live").className = "live off";
  fill($("live-text"), "signed out");
  $("banner").hidden = true;
}

/** Redeem the one-time code of the link this page was opened with, if any; the code leaves the address. */
async function redeemLink() {
  const found = /(?:^#|&)login=([^&]+)/.exec(location.hash);
  if (!found) return;
  history.replaceState(null, "", location.pathname + location.search);
  const response = await fetch(LOGIN, {
    method: "POST",
    headers: { "content-type": "application/json", accept: "application/json" },
    body: JSON.stringify({ code: decodeURIComponent(found[1]) }),
    cache: "no-store",
  });
  const answer = await response.json().catch(() => ({}));
  if (!response.ok) throw new SignedOut(answer.message || `the edge answered HTTP ${response.status}`);
  sessionStorage.setItem(SESSION_KEY, JSON.stringify({ token: answer.session, expiresAtMs: answer.expiresAtMs }));
}

// ----- talking to the edge -----

function toast(text, kind = "ok") {
  const el = h("p", { class: `toast ${kind}` }, text);
  $("toasts").append(el);
  setTimeout(() => el.remove(), 4000);
}

/** Send a control call; `label` says what it does ("Break Ireland's API"), for the log and the toast. */
async function control(path, body, label) {
  try {
    const response = await fetch(`${CONTROL}/${path}`, {
      method: "POST",
      // The edge takes control actions only as JSON, with the session (no other page can send either).
      headers: authorized({ "content-type": "application/json", accept: "application/json" }),
      body: JSON.stringify(body || {}),
    });
    if (response.status === 401) throw new SignedOut("Your session has ended: sign in again.");
    if (!response.ok) {
      let message = `HTTP ${response.status}`;
      try {
        const err = await response.json();
        message = err.message || err.error || message;
      } catch {
        // not JSON: the status says enough
      }
      throw new Error(message);
    }
    logEvent(Date.now(), `You: ${label}`, "action");
    toast(`${label}: done`);
  } catch (err) {
    if (err instanceof SignedOut) {
      signedOut(err.message);
      return;
    }
    const text = `${label}: failed (${err.message === "Failed to fetch" ? "the edge does not answer" : err.message})`;
    logEvent(Date.now(), text, "down");
    toast(text, "error");
  }
  await refresh();
}

const signatures = {};

/** Redraw a panel only when its data changed, keeping the keyboard focus where it was. */
function update(id, data, draw) {
  const signature = JSON.stringify(data);
  if (signatures[id] === signature) return;
  const panel = $(id);
  const active = document.activeElement;
  const inside = panel.contains(active) && active !== panel;
  if (inside && active.tagName === "INPUT") return; // the operator is typing there: draw it later
  const name = (el) => el.getAttribute("aria-label") || el.textContent;
  const focused = inside ? name(active) : null;
  signatures[id] = signature;
  draw();
  if (focused) [...panel.querySelectorAll("button, input, a")].find((el) => name(el) === focused)?.focus();
}

let failures = 0;
let timer = null;

async function refresh() {
  clearTimeout(timer);
  if (!session()) {
    signedOut("Your session has ended: sign in again.");
    return;
  }
  try {
    const response = await fetch(OVERVIEW, { headers: authorized({ accept: "application/json" }), cache: "no-store" });
    if (response.status === 401) {
      signedOut("Your session has ended (it lasts twelve hours, and rotating the operator token ends it).");
      return;
    }
    if (!response.ok) throw new Error(`the edge answered HTTP ${response.status}`);
    const m = model(await response.json());
    failures = 0;
    $("banner").hidden = true;
    noteChanges(m);
    update("map", m, () => drawMap(m));
    update("regions", [m.regions, m.apiAnswer], () => drawRegions(m));
    update("links", m.links.map(({ bytes, connections, open, ...rest }) => rest), () => drawLinks(m));
    update("objects", m.objects, () => drawObjects(m));
    update("blog", [m.blog, m.blogAnswer], () => drawBlog(m));
    update("conflicts", m.conflicts, () => drawConflicts(m));
    $("live").className = "live on";
    fill($("live-text"), `live · updated ${clock(Date.now())}`);
  } catch (err) {
    failures += 1;
    $("live").className = "live off";
    fill($("live-text"), "not updating");
    fill($("banner"), `The edge's overview is not available (${err.message === "Failed to fetch" ? "no answer" : err.message}). Retrying…`);
    $("banner").hidden = false;
  } finally {
    // Back off while the edge does not answer, up to 5 s. (One timer, whichever refresh ends last.)
    clearTimeout(timer);
    timer = setTimeout(refresh, Math.min(5000, POLL_MS * 2 ** Math.min(failures, 3)));
  }
}

// The drawing's shape follows the window's: draw it again when that changes.
let wasNarrow = null;
window.addEventListener("resize", () => {
  const narrow = $("map").clientWidth < 600;
  if (narrow !== wasNarrow && previous) {
    wasNarrow = narrow;
    drawMap(previous);
  }
});

async function start() {
  try {
    await redeemLink();
  } catch (err) {
    const why = err instanceof SignedOut ? err.message : `signing in failed (${err.message})`;
    signedOut(why.charAt(0).toUpperCase() + why.slice(1));
    return;
  }
  if (!session()) {
    signedOut("This page acts on the running system, so it needs the operator's sign-in.");
    return;
  }
  document.body.classList.remove("signed-out");
  $("signin").hidden = true;
  refresh();
}

// A sign-in link opened in a tab that already shows this page changes only the fragment.
window.addEventListener("hashchange", () => {
  if (/(?:^#|&)login=/.test(location.hash)) start();
});
start();
