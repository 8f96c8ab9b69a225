// What the pages share: the catalog (loaded once), the shopper's cart and its item count, the last order.

import * as api from "./api.js";
import { cents } from "./dom.js";

export const MAX_QUANTITY = 99;

let catalog = null;

/** Every book of the catalog, fetched once per visit (56 books: one small answer). */
export function allBooks() {
  if (!catalog) {
    catalog = api.books().catch((err) => {
      catalog = null; // try again next time instead of remembering the failure
      throw err;
    });
  }
  return catalog;
}

/** id -> book for the books the catalog holds. */
export async function booksById() {
  return new Map((await allBooks()).map((b) => [b.id, b]));
}

/** [{name, count}] of the catalog's categories, the biggest first. */
export async function categories() {
  const counts = new Map();
  for (const b of await allBooks()) counts.set(b.category, (counts.get(b.category) || 0) + 1);
  return [...counts].map(([name, count]) => ({ name, count })).sort((a, b) => b.count - a.count);
}

/** A cover's address: covers are published next to index.html. */
export function coverUrl(book) {
  const cover = (book && book.cover) || `covers/${book.id}.svg`;
  return /^(https?:)?\//.test(cover) ? cover : `/${cover}`;
}

// ----- the cart -----

export const cartEvents = new EventTarget();
let rows = null;

function changed(next) {
  rows = next;
  const count = rows.reduce((sum, r) => sum + r.quantity, 0);
  cartEvents.dispatchEvent(new CustomEvent("count", { detail: count }));
  return rows;
}

/** The cart's rows, fresh from the API. */
export async function loadCart() {
  return changed(await api.cart());
}

/** The cart as last loaded (loading it when it never was). */
export async function cartRows() {
  return rows || loadCart();
}

/** Adds `quantity` to the row of `bookId` (the API's POST overwrites a row, so add what is there). */
export async function addToCart(bookId, quantity = 1) {
  const current = await cartRows();
  const existing = current.find((r) => r.bookId === bookId);
  const wanted = Math.min(MAX_QUANTITY, (existing ? existing.quantity : 0) + quantity);
  const row = await api.putCartRow(bookId, wanted);
  return changed([...current.filter((r) => r.bookId !== bookId), row]);
}

export async function setQuantity(bookId, quantity) {
  const row = await api.setCartQuantity(bookId, quantity);
  return changed((rows || []).map((r) => (r.bookId === bookId ? row : r)));
}

export async function removeFromCart(bookId) {
  await api.removeCartRow(bookId);
  return changed((rows || []).filter((r) => r.bookId !== bookId));
}

/** After a checkout the API has emptied the ordered rows. */
export function forgetRows(bookIds) {
  const gone = new Set(bookIds);
  changed((rows || []).filter((r) => !gone.has(r.bookId)));
}

export function forgetCart() {
  rows = null;
  cartEvents.dispatchEvent(new CustomEvent("count", { detail: 0 }));
}

/** Total of rows in cents. */
export function totalCents(lines) {
  return lines.reduce((sum, r) => sum + cents(r.price) * r.quantity, 0);
}

// ----- checkout -----

let pendingCheckout = null; // {key, signature}: a failed checkout's key, reused when the shopper retries

/** The Idempotency-Key for paying for `lines`: the same as the last failed attempt's for the same lines. */
export function checkoutKey(lines) {
  const signature = lines
    .map((r) => `${r.bookId}x${r.quantity}`)
    .sort()
    .join(",");
  if (!pendingCheckout || pendingCheckout.signature !== signature) {
    pendingCheckout = { key: api.newIdempotencyKey(), signature };
  }
  return pendingCheckout.key;
}

export function checkoutDone() {
  pendingCheckout = null;
}

let lastOrder = null; // {order, region}: what the confirmation page shows without asking again

export function rememberOrder(order, region) {
  lastOrder = { order, region };
}

export function rememberedOrder(orderId) {
  return lastOrder && lastOrder.order.orderId === orderId ? lastOrder : null;
}
