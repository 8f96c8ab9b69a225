// The storefront's entry point: hash routes to pages, the header (account, cart count, serving region).

import * as api from "./api.js";
import { fill, h } from "./dom.js";
import * as pages from "./pages.js";
import * as shop from "./shop.js";

const ROUTES = [
  [/^\/$/, pages.home],
  [/^\/signup$/, pages.signup],
  [/^\/confirm$/, pages.confirm],
  [/^\/signin$/, pages.signin],
  [/^\/category\/(?<name>[^/]+)$/, pages.category],
  [/^\/search$/, pages.search],
  [/^\/bestsellers$/, pages.bestsellers],
  [/^\/book\/(?<id>[^/]+)$/, pages.book],
  [/^\/cart$/, pages.cart],
  [/^\/checkout$/, pages.checkout],
  [/^\/confirmation\/(?<id>[^/]+)$/, pages.confirmation],
  [/^\/orders$/, pages.orders],
];
const TRUTH_EVERY_MS = 5000;
const SLOW_PAGE_MS = 250;

const main = document.getElementById("main");
let rendering = 0;
let firstRender = true;

function currentRoute() {
  const raw = location.hash.startsWith("#/") ? location.hash.slice(1) : "/";
  const [path, queryString = ""] = raw.split("?", 2);
  for (const [pattern, page] of ROUTES) {
    const match = pattern.exec(path);
    if (match) {
      const params = Object.fromEntries(
        Object.entries(match.groups || {}).map(([k, v]) => [k, decodeURIComponent(v)]),
      );
      return { page, params, query: new URLSearchParams(queryString), path };
    }
  }
  return { page: pages.notFound, params: {}, query: new URLSearchParams(), path };
}

async function render() {
  const mine = ++rendering;
  const { page, params, query, path } = currentRoute();
  markCurrentNav(path);
  if (page !== pages.search) document.getElementById("search-input").value = "";
  main.setAttribute("aria-busy", "true");
  // Only a slow page shows "Loading…", so quick ones do not flicker.
  const slow = setTimeout(() => {
    if (mine === rendering) fill(main, h("p", { class: "loading" }, "Loading…"));
  }, SLOW_PAGE_MS);
  let view;
  try {
    view = await page(params, query);
  } catch (err) {
    if (err && err.status === 401) {
      clearTimeout(slow);
      if (mine === rendering) {
        api.session.clear();
        pages.go(`/signin?next=${encodeURIComponent(location.hash.slice(1) || "/")}`, {
          kind: "info",
          text: err.message,
        });
      }
      return;
    }
    view = pages.failure(err, render);
  } finally {
    clearTimeout(slow);
  }
  if (mine !== rendering) return; // the shopper has moved on meanwhile
  main.removeAttribute("aria-busy");
  fill(main, view.node);
  document.title = view.title === "Bookstore" ? "Bookstore" : `${view.title} · Bookstore`;
  if (!firstRender) {
    // Moving focus to the new heading tells keyboard and screen-reader users the page changed.
    const title = main.querySelector("h1");
    (title || main).focus({ preventScroll: true });
    window.scrollTo(0, 0);
  }
  firstRender = false;
}

function markCurrentNav(path) {
  for (const link of document.querySelectorAll(".site-nav a[href^='#/']")) {
    const target = link.getAttribute("href").slice(1);
    if (target === path) link.setAttribute("aria-current", "page");
    else link.removeAttribute("aria-current");
  }
}

// ----- header -----

function drawAccount(current) {
  const account = document.getElementById("account");
  if (!current) {
    fill(account, h("a", { href: "#/signin" }, "Sign in"));
    document.getElementById("cart-count").hidden = true;
    return;
  }
  const out = h("button", { type: "button", class: "link" }, "Sign out");
  out.addEventListener("click", async () => {
    out.disabled = true;
    await api.signout();
    shop.forgetCart();
    pages.go("/", { kind: "ok", text: "You are signed out." });
  });
  fill(account, h("span", { class: "who", title: current.email }, current.email), " ", out);
}

function drawCount(count) {
  const badge = document.getElementById("cart-count");
  badge.textContent = String(count);
  badge.hidden = count === 0;
  document.getElementById("cart-link").setAttribute("aria-label", `Cart, ${count} item${count === 1 ? "" : "s"}`);
}

// A flag emoji is two regional-indicator letters: the country code names the drawn flag to show
// (emoji flags do not render on every system).
const DRAWN_FLAGS = new Set(["ie", "sg", "us"]);

function countryOf(flag) {
  const letters = [...(flag || "")].map((c) => c.codePointAt(0) - 0x1f1e6);
  if (letters.length !== 2 || letters.some((n) => n < 0 || n > 25)) return null;
  return letters.map((n) => String.fromCharCode(97 + n)).join("");
}

function drawRegion(region) {
  const flagEl = document.getElementById("region-flag");
  const nameEl = document.getElementById("region-name");
  const box = document.getElementById("region");
  if (!region) return;
  const country = countryOf(region.flag);
  if (country && DRAWN_FLAGS.has(country)) {
    fill(flagEl, h("img", { src: `/flags/${country}.svg`, alt: "", width: 24, height: 16 }));
  } else {
    fill(flagEl, region.flag || "🌐");
  }
  const name = region.regionName || region.regionId;
  if (nameEl.textContent !== name) nameEl.textContent = name;
  box.dataset.regionId = region.regionId;
  box.title = `The latest answer came from ${name} (${region.regionId})`;
}

function pollTruth() {
  if (document.visibilityState === "visible") {
    api.truth().catch(() => {
      // the header keeps the last region it knew; pages report their own failures
    });
  }
}

// ----- start -----

function start() {
  document.querySelector(".skip-link").addEventListener("click", (e) => {
    e.preventDefault(); // a plain #main would be taken for a route
    main.focus();
  });
  const headerSearch = document.getElementById("search-form");
  headerSearch.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = new FormData(headerSearch).get("q").toString().trim();
    if (q) pages.go(`/search?q=${encodeURIComponent(q)}`);
  });
  api.events.addEventListener("region", (e) => drawRegion(e.detail));
  api.events.addEventListener("session", (e) => drawAccount(e.detail));
  shop.cartEvents.addEventListener("count", (e) => drawCount(e.detail));
  window.addEventListener("hashchange", () => {
    if (location.hash === "" || location.hash.startsWith("#/")) render();
  });
  // Nothing may fail silently: an error no page caught still tells the shopper something.
  window.addEventListener("unhandledrejection", (e) => {
    e.preventDefault();
    pages.toast((e.reason && e.reason.message) || "Something went wrong. Please try again.", "error");
  });
  drawAccount(api.session.get());
  if (api.session.get()) shop.loadCart().catch(() => {});
  pollTruth();
  setInterval(pollTruth, TRUTH_EVERY_MS);
  document.addEventListener("visibilitychange", pollTruth);
  render();
}

start();
