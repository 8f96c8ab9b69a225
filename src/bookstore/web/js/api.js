// The Bookstore API as the storefront calls it: through the edge at /api, with the session's tokens, one
// refresh on 401, retries of idempotent calls, readable errors, and the region that served each answer.

const BASE = "/api";
const SESSION_KEY = "bookstore.session";
const ATTEMPT_TIMEOUT_MS = 15000;
// Waits before the 2nd and 3rd attempt of an idempotent call: long enough for the edge to mark a
// failed region down and route to the next one.
const RETRY_DELAYS_MS = [400, 1500];
const RETRY_STATUSES = new Set([502, 503, 504]);

/** A failed call: `status` 0 when the store could not be reached; `message` is fit to show a shopper. */
export class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.name = "ApiError";
    this.status = status;
    this.code = code;
  }
}

/** Emits "region" (detail: {regionId, regionName?, flag?}) and "session" (detail: session or null). */
export const events = new EventTarget();

export const session = {
  get() {
    try {
      return JSON.parse(sessionStorage.getItem(SESSION_KEY) || "null");
    } catch {
      return null;
    }
  },
  set(value) {
    sessionStorage.setItem(SESSION_KEY, JSON.stringify(value));
    events.dispatchEvent(new CustomEvent("session", { detail: value }));
  },
  clear() {
    sessionStorage.removeItem(SESSION_KEY);
    events.dispatchEvent(new CustomEvent("session", { detail: null }));
  },
};

const regions = new Map(); // regionId -> {regionId, regionName, flag}, learnt from /truth
let servingRegion = null;
let lookingUp = null;

/** The region that served the latest answer, as far as it is known. */
export function servedBy() {
  return servingRegion ? regions.get(servingRegion) || { regionId: servingRegion } : null;
}

function noteRegion(regionId) {
  if (!regionId || regionId === servingRegion) return;
  servingRegion = regionId;
  announceRegion();
  if (!regions.has(regionId) && !lookingUp) {
    lookingUp = fetch(`${BASE}/truth`, { headers: { accept: "application/json" } })
      .then((r) => (r.ok ? r.json() : null))
      .then((truth) => {
        if (truth && truth.regionId) regions.set(truth.regionId, truth);
        announceRegion();
      })
      .catch(() => {}) // the name stays unknown until the next answer; the id is shown meanwhile
      .finally(() => {
        lookingUp = null;
      });
  }
}

function announceRegion() {
  events.dispatchEvent(new CustomEvent("region", { detail: servedBy() }));
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

async function attempt(path, init) {
  const controller = new AbortController();
  const timer = setTimeout(() => controller.abort(), ATTEMPT_TIMEOUT_MS);
  try {
    const response = await fetch(BASE + path, { ...init, signal: controller.signal });
    noteRegion(response.headers.get("x-bookstore-region"));
    return response;
  } catch (err) {
    const slow = err && err.name === "AbortError";
    throw new ApiError(
      0,
      slow ? "Timeout" : "NetworkError",
      slow
        ? "The store took too long to answer. Please try again."
        : "The store could not be reached. Check your connection and try again.",
    );
  } finally {
    clearTimeout(timer);
  }
}

async function readError(response, auth) {
  let body = null;
  try {
    body = await response.json();
  } catch {
    // not JSON: an edge or proxy page; the status says enough
  }
  const code = (body && body.error) || `Http${response.status}`;
  if (response.status >= 500) {
    return new ApiError(
      response.status,
      code,
      `The store is having trouble right now (HTTP ${response.status}). Please try again in a moment.`,
    );
  }
  if (response.status === 401 && auth) {
    return new ApiError(401, code, "Your session has ended. Please sign in again.");
  }
  const message = (body && body.message) || `The request failed (HTTP ${response.status}).`;
  return new ApiError(response.status, code, message.charAt(0).toUpperCase() + message.slice(1));
}

let refreshing = null;

/** One refresh for all the calls that met a 401 at the same time; false when the session is over. */
function refreshOnce() {
  const current = session.get();
  if (!current || !current.refreshToken) return Promise.resolve(false);
  if (!refreshing) {
    refreshing = attempt("/auth/refresh", {
      method: "POST",
      headers: { "content-type": "application/json", accept: "application/json" },
      body: JSON.stringify({ refreshToken: current.refreshToken }),
    })
      .then(async (response) => {
        if (!response.ok) return false;
        const tokens = await response.json();
        session.set({ ...current, accessToken: tokens.accessToken, refreshToken: tokens.refreshToken });
        return true;
      })
      .catch(() => false)
      .finally(() => {
        refreshing = null;
      });
  }
  return refreshing;
}

/**
 * Call the API: `path` is below /api. Options: method, body (sent as JSON), auth (send the access token),
 * headers. Returns the parsed JSON. GETs and calls with an Idempotency-Key are retried when the store
 * cannot be reached or answers 502/503/504; a 401 refreshes the token once and repeats the call.
 */
export async function request(path, { method = "GET", body, auth = false, headers = {}, withNext = false } = {}) {
  const retriable = method === "GET" || "Idempotency-Key" in headers;
  let refreshed = false;
  for (let tries = 0; ; tries++) {
    const sending = { accept: "application/json", ...headers };
    if (body !== undefined) sending["content-type"] = "application/json";
    if (auth) {
      const current = session.get();
      if (!current) throw new ApiError(401, "SignedOut", "Please sign in first.");
      sending.authorization = `Bearer ${current.accessToken}`;
    }
    let response;
    try {
      response = await attempt(path, {
        method,
        headers: sending,
        body: body === undefined ? undefined : JSON.stringify(body),
      });
    } catch (err) {
      if (retriable && tries < RETRY_DELAYS_MS.length) {
        await sleep(RETRY_DELAYS_MS[tries]);
        continue;
      }
      throw err;
    }
    if (response.ok) {
      const data = response.status === 204 ? null : await response.json();
      return withNext ? { data, next: response.headers.get("x-next-cursor") } : data;
    }
    if (response.status === 401 && auth && !refreshed) {
      refreshed = true;
      if (await refreshOnce()) {
        tries--; // the refresh is not a failed attempt
        continue;
      }
      session.clear();
    }
    if (retriable && RETRY_STATUSES.has(response.status) && tries < RETRY_DELAYS_MS.length) {
      await sleep(RETRY_DELAYS_MS[tries]);
      continue;
    }
    throw await readError(response, auth);
  }
}

// ----- the calls the pages make -----

export const truth = async () => {
  const answer = await request("/truth");
  if (answer && answer.regionId) {
    const known = regions.has(answer.regionId);
    regions.set(answer.regionId, answer);
    if (!known && answer.regionId === servingRegion) announceRegion();
  }
  return answer;
};
/** Every item of a paged list (GET /books, GET /orders): follows X-Next-Cursor to the last page. */
async function allPages(path, options = {}) {
  const items = [];
  let cursor = null;
  do {
    const separator = path.includes("?") ? "&" : "?";
    const url = cursor ? `${path}${separator}cursor=${encodeURIComponent(cursor)}` : path;
    const { data, next } = await request(url, { ...options, withNext: true });
    items.push(...data);
    cursor = next;
  } while (cursor);
  return items;
}

export const books = (category) =>
  allPages(category ? `/books?category=${encodeURIComponent(category)}` : "/books");
export const book = (id) => request(`/books/${encodeURIComponent(id)}`);
export const search = (q) => request(`/search?q=${encodeURIComponent(q)}`);
export const bestsellers = () => request("/bestsellers");

export const signup = (email, password) =>
  request("/auth/signup", { method: "POST", body: { email, password } });
export const confirm = (email, code) => request("/auth/confirm", { method: "POST", body: { email, code } });
export const resendCode = (email) => request("/auth/resend-code", { method: "POST", body: { email } });

export async function signin(email, password) {
  const tokens = await request("/auth/signin", { method: "POST", body: { email, password } });
  session.set({ email, accessToken: tokens.accessToken, refreshToken: tokens.refreshToken });
  return tokens;
}

export async function signout() {
  try {
    if (session.get()) await request("/auth/signout", { method: "POST", auth: true });
  } catch {
    // signing out locally is what matters to the shopper; the session expires on its own
  } finally {
    session.clear();
  }
}

// Cart writes set a row to a quantity or remove it: repeating one changes nothing more, so they carry an
// Idempotency-Key, which lets the edge (and this client) retry them in another region when one fails.
const once = () => ({ "Idempotency-Key": newIdempotencyKey() });
export const cart = () => request("/cart", { auth: true });
export const putCartRow = (bookId, quantity) =>
  request("/cart", { method: "POST", body: { bookId, quantity }, auth: true, headers: once() });
export const setCartQuantity = (bookId, quantity) =>
  request("/cart", { method: "PUT", body: { bookId, quantity }, auth: true, headers: once() });
export const removeCartRow = (bookId) =>
  request(`/cart/${encodeURIComponent(bookId)}`, { method: "DELETE", auth: true, headers: once() });

export const orders = () => allPages("/orders", { auth: true });
/** Checkout; the same `idempotencyKey` on a retry makes the same order, never a second one. */
export const placeOrder = (books, idempotencyKey) =>
  request("/orders", {
    method: "POST",
    body: { books },
    auth: true,
    headers: { "Idempotency-Key": idempotencyKey },
  });

/** A fresh idempotency key (randomUUID where the page is a secure context, else the same from random bytes). */
export function newIdempotencyKey() {
  if (crypto.randomUUID) return crypto.randomUUID();
  const b = crypto.getRandomValues(new Uint8Array(16));
  b[6] = (b[6] & 0x0f) | 0x40;
  b[8] = (b[8] & 0x3f) | 0x80;
  const hex = [...b].map((x) => x.toString(16).padStart(2, "0")).join("");
  return `${hex.slice(0, 8)}-${hex.slice(8, 12)}-${hex.slice(12, 16)}-${hex.slice(16, 20)}-${hex.slice(20)}`;
}
