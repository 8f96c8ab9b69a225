// Building the page from data: elements made with text nodes only (never HTML strings), and money in cents.

/**
 * h("a", {href: "#/cart", class: "x", onclick: fn}, "text", child, [more]) -> Element.
 * Attributes starting with "on" become listeners; `false`/`null` attributes and children are skipped,
 * strings become text nodes, so nothing a server sends can ever be read as markup.
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [name, value] of Object.entries(attrs || {})) {
    if (value === false || value === null || value === undefined) continue;
    if (name.startsWith("on") && typeof value === "function") {
      el.addEventListener(name.slice(2), value);
    } else if (name === "dataset") {
      Object.assign(el.dataset, value);
    } else if (value === true) {
      el.setAttribute(name, "");
    } else {
      el.setAttribute(name, String(value));
    }
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const child of children) {
    if (child === null || child === undefined || child === false) continue;
    if (Array.isArray(child)) append(el, child);
    else el.append(child instanceof Node ? child : document.createTextNode(String(child)));
  }
}

/** Replace everything inside `el` with `children`. */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
  return el;
}

/** A price from the API (a JSON number of dollars) as whole cents, so sums never drift. */
export function cents(price) {
  return Math.round(Number(price) * 100);
}

const money = new Intl.NumberFormat("en-US", { style: "currency", currency: "USD" });

/** "$12.34" from cents. */
export function dollars(amountCents) {
  return money.format(amountCents / 100);
}

const dateFormat = new Intl.DateTimeFormat("en-GB", { dateStyle: "medium", timeStyle: "short" });

/** A readable date and time from epoch milliseconds. */
export function when(epochMs) {
  return dateFormat.format(new Date(epochMs));
}

/** A book's rating as stars that a screen reader reads as words. */
export function stars(rating) {
  const n = Math.max(0, Math.min(5, Math.round(Number(rating) || 0)));
  return h(
    "span",
    { class: "stars", role: "img", "aria-label": `Rated ${n} out of 5` },
    "★".repeat(n) + "☆".repeat(5 - n),
  );
}
