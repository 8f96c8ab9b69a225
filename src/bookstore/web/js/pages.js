// The storefront's pages: each takes the route's parameters and returns {title, node} to show in <main>.

import * as api from "./api.js";
import { cents, dollars, fill, h, stars, when } from "./dom.js";
import * as shop from "./shop.js";

// ----- navigation and messages carried to the next page -----

let flash = null;

/** Go to a route, with an optional message ({kind: "ok"|"error"|"info", text}) shown on arrival. */
export function go(path, message = null) {
  flash = message;
  if (location.hash === `#${path}`) window.dispatchEvent(new HashChangeEvent("hashchange"));
  else location.hash = path;
}

function takeFlash() {
  const message = flash;
  flash = null;
  return message ? notice(message.kind, message.text) : null;
}

export function notice(kind, ...text) {
  return h("p", { class: `notice ${kind}`, role: kind === "error" ? "alert" : "status" }, ...text);
}

/** Pages that need a signed-in shopper call this first. */
function requireSession() {
  if (!api.session.get()) throw new api.ApiError(401, "SignedOut", "Please sign in first.");
}

const toasts = () => document.getElementById("toasts");

/** A short message that comes and goes (read out by screen readers through the live region). */
export function toast(text, kind = "ok") {
  const el = h("p", { class: `toast ${kind}` }, text);
  toasts().append(el);
  setTimeout(() => el.remove(), 4000);
}

// ----- shared pieces -----

function heading(text, ...extra) {
  return h("h1", { tabindex: "-1" }, text, ...extra);
}

function cover(book, size = "medium") {
  return h("img", {
    class: `cover ${size}`,
    src: shop.coverUrl(book),
    alt: "",
    loading: "lazy",
    decoding: "async",
    width: size === "large" ? 240 : size === "small" ? 48 : 140,
    height: size === "large" ? 360 : size === "small" ? 72 : 210,
  });
}

const bookLink = (book) => `#/book/${encodeURIComponent(book.id)}`;

async function addAndTell(book, quantity, button) {
  if (!api.session.get()) {
    go(`/signin?next=${encodeURIComponent(location.hash.slice(1) || "/")}`, {
      kind: "info",
      text: "Sign in to add books to your cart.",
    });
    return;
  }
  const label = button.textContent;
  button.disabled = true;
  try {
    await shop.addToCart(book.id, quantity);
    toast(`Added “${book.name}” to your cart.`);
    button.textContent = "Added ✓";
    setTimeout(() => {
      button.textContent = label;
    }, 1500);
  } catch (err) {
    toast(err.message, "error");
  } finally {
    button.disabled = false;
  }
}

function bookCard(book, extra = null) {
  const add = h("button", { type: "button", class: "secondary", "aria-label": `Add “${book.name}” to cart` }, "Add to cart");
  add.addEventListener("click", () => addAndTell(book, 1, add));
  return h(
    "li",
    { class: "book-card" },
    h("a", { href: bookLink(book), class: "cover-link", tabindex: "-1", "aria-hidden": "true" }, cover(book)),
    h("div", { class: "book-info" },
      h("h3", { class: "book-title" }, h("a", { href: bookLink(book) }, book.name)),
      h("p", { class: "author" }, book.author),
      stars(book.rating),
      extra,
      h("p", { class: "price" }, dollars(cents(book.price))),
    ),
    add,
  );
}

function bookGrid(books, label, extraFor = () => null) {
  return h("ul", { class: "book-grid", "aria-label": label }, books.map((b) => bookCard(b, extraFor(b))));
}

async function categoryBar(current = null) {
  const list = await shop.categories();
  return h(
    "nav",
    { class: "category-bar", "aria-label": "Categories" },
    h("ul", {},
      list.map((c) =>
        h("li", {},
          h("a", {
            href: `#/category/${encodeURIComponent(c.name)}`,
            "aria-current": c.name === current ? "page" : false,
          }, c.name, h("span", { class: "count" }, ` ${c.count}`)),
        ),
      ),
    ),
  );
}

/** The best sellers that exist in the catalog, with their books: [{book, quantity}]. */
async function rankedBooks() {
  const [top, byId] = await Promise.all([api.bestsellers(), shop.booksById()]);
  return top.filter((t) => byId.has(t.bookId)).map((t) => ({ book: byId.get(t.bookId), quantity: t.quantity }));
}

function shelf(books, ranked) {
  return h("ol", { class: "shelf" },
    books.map((book, i) =>
      h("li", {},
        h("a", { href: bookLink(book) }, cover(book),
          ranked ? h("span", { class: "rank" }, `#${i + 1}`) : null,
          h("span", { class: "shelf-title" }, book.name)),
      ),
    ),
  );
}

async function bestsellersBar() {
  const ranked = (await rankedBooks()).slice(0, 8);
  let body;
  if (ranked.length) {
    body = shelf(ranked.map((r) => r.book), true);
  } else {
    // Before the first sale there is no ranking: show the best-rated books meanwhile.
    const rated = (await shop.allBooks()).slice().sort((a, b) => b.rating - a.rating).slice(0, 8);
    body = [h("p", { class: "muted" }, "No sales yet: the first order makes the first best seller. Highly rated meanwhile:"),
      shelf(rated, false)];
  }
  return h("section", { class: "bestsellers-bar", "aria-labelledby": "bar-heading" },
    h("div", { class: "section-head" },
      h("h2", { id: "bar-heading" }, "Best sellers"),
      h("a", { href: "#/bestsellers" }, "See the top 20")),
    body,
  );
}

function searchForm(value = "") {
  const input = h("input", {
    id: "page-search", name: "q", type: "search", value, required: true, maxlength: "200",
    placeholder: "Try “bread”, “sql” or an author",
  });
  const form = h("form", { class: "search-form big", role: "search" },
    h("label", { for: "page-search", class: "visually-hidden" }, "Search books"),
    input,
    h("button", { type: "submit" }, "Search"),
  );
  form.addEventListener("submit", (e) => {
    e.preventDefault();
    const q = input.value.trim();
    if (q) go(`/search?q=${encodeURIComponent(q)}`);
  });
  return form;
}

/** A form's error line, filled on failure; role=alert makes screen readers read it at once. */
function formError() {
  return h("p", { class: "notice error", role: "alert", hidden: true });
}

function showError(el, message) {
  fill(el, message);
  el.hidden = false;
}

function field(id, label, attrs, hint = null) {
  return h("div", { class: "field" },
    h("label", { for: id }, label),
    h("input", { id, name: id, ...attrs, "aria-describedby": hint ? `${id}-hint` : false }),
    hint ? h("p", { class: "hint", id: `${id}-hint` }, hint) : null,
  );
}

/** Runs `action` for a submitted form: its button busy meanwhile, its error line filled on failure. */
function onSubmit(form, errorLine, action) {
  form.addEventListener("submit", async (e) => {
    e.preventDefault();
    const button = form.querySelector("button[type=submit]");
    errorLine.hidden = true;
    button.disabled = true;
    form.setAttribute("aria-busy", "true");
    try {
      await action(new FormData(form));
    } catch (err) {
      showError(errorLine, err.message || "Something went wrong. Please try again.");
    } finally {
      button.disabled = false;
      form.removeAttribute("aria-busy");
    }
  });
  return form;
}

const NO_MAIL = [
  "This store sends no mail. Your confirmation code is written to the log of the region that took your sign-up; an operator can also print it with ",
  h("code", {}, "bookstore users confirm-code YOUR-EMAIL"),
  ".",
];

function signupForm() {
  const error = formError();
  const form = h("form", { class: "card form" },
    h("h2", {}, "Create an account"),
    error,
    field("signup-email", "Email", { type: "email", required: true, autocomplete: "email", maxlength: "254" }),
    field("signup-password", "Password", {
      type: "password", required: true, minlength: "8", maxlength: "200", autocomplete: "new-password",
    }, "At least 8 characters."),
    h("button", { type: "submit" }, "Sign up"),
    h("p", { class: "muted" }, "Already have an account? ", h("a", { href: "#/signin" }, "Sign in")),
  );
  return onSubmit(form, error, async (data) => {
    const email = String(data.get("signup-email")).trim();
    await api.signup(email, String(data.get("signup-password")));
    go(`/confirm?email=${encodeURIComponent(email)}`, {
      kind: "ok",
      text: `Signed up as ${email}. Enter the confirmation code to finish.`,
    });
  });
}

// Line drawings for the home page's tiles (emoji are not drawn on every system).
const ICONS = {
  orders: "M5 8l11-5 11 5v16l-11 5-11-5zM5 8l11 5 11-5M16 13v16",
  cart: "M3 5h4l3 15h15l3-11H9M13 27a1.5 1.5 0 1 0 0.01 0M23 27a1.5 1.5 0 1 0 0.01 0",
  bestsellers: "M10 4h12v8a6 6 0 0 1-12 0zM10 7H5a4 4 0 0 0 5 6M22 7h5a4 4 0 0 1-5 6M16 18v5M11 28h10l-1-5h-8z",
};

function icon(name) {
  const svg = document.createElementNS("http://www.w3.org/2000/svg", "svg");
  svg.setAttribute("viewBox", "0 0 32 32");
  svg.setAttribute("class", "tile-icon");
  svg.setAttribute("aria-hidden", "true");
  const path = document.createElementNS("http://www.w3.org/2000/svg", "path");
  path.setAttribute("d", ICONS[name]);
  path.setAttribute("fill", "none");
  path.setAttribute("stroke", "currentColor");
  path.setAttribute("stroke-width", "2");
  path.setAttribute("stroke-linejoin", "round");
  path.setAttribute("stroke-linecap", "round");
  svg.append(path);
  return svg;
}

function tile(href, iconName, title, text) {
  return h("li", {}, h("a", { href, class: "tile" }, icon(iconName), h("strong", {}, title), h("span", {}, text)));
}

// ----- the pages -----

export async function home() {
  const signedIn = api.session.get();
  const [bar, cats] = await Promise.all([bestsellersBar(), categoryBar()]);
  if (!signedIn) {
    return {
      title: "Bookstore",
      node: h("div", { class: "page landing" },
        takeFlash(),
        h("section", { class: "hero" },
          h("div", { class: "hero-text" },
            heading("Books for the kitchen, the workshop and bedtime"),
            h("p", { class: "lead" },
              "Fifty-six books in seven categories, from sourdough to SQL. Browse freely; create an account to fill a cart and order."),
            searchForm(),
          ),
          signupForm(),
        ),
        cats,
        bar,
      ),
    };
  }
  const rows = await shop.cartRows().catch(() => []);
  const items = rows.reduce((sum, r) => sum + r.quantity, 0);
  return {
    title: "Bookstore",
    node: h("div", { class: "page home" },
      takeFlash(),
      heading("Welcome back"),
      searchForm(),
      cats,
      bar,
      h("ul", { class: "tiles", "aria-label": "Shortcuts" },
        tile("#/orders", "orders", "Past orders", "See them and buy again"),
        tile("#/cart", "cart", "Your cart", items ? `${items} item${items === 1 ? "" : "s"}` : "Empty for now"),
        tile("#/bestsellers", "bestsellers", "Best sellers", "The top 20"),
      ),
    ),
  };
}

export async function signup() {
  return { title: "Sign up", node: h("div", { class: "page narrow" }, takeFlash(), heading("Sign up"), signupForm()) };
}

export async function confirm(_params, query) {
  const email = query.get("email") || "";
  const error = formError();
  const form = h("form", { class: "card form" },
    error,
    field("confirm-email", "Email", { type: "email", required: true, autocomplete: "email", value: email }),
    field("confirm-code", "Confirmation code", {
      type: "text", required: true, inputmode: "numeric", autocomplete: "one-time-code", maxlength: "32",
    }),
    h("button", { type: "submit" }, "Confirm"),
  );
  // A code lasts 24 hours and a few wrong tries; a new one goes to the region's log like the first.
  const sent = h("p", { class: "notice ok", role: "status", hidden: true });
  const resend = h("button", { type: "button", class: "secondary" }, "Send a new code");
  resend.addEventListener("click", async () => {
    error.hidden = true;
    sent.hidden = true;
    const address = String(new FormData(form).get("confirm-email")).trim();
    try {
      await api.resendCode(address);
      sent.textContent = `A new code was sent for ${address} (see the region's log). Earlier codes no longer work.`;
      sent.hidden = false;
    } catch (err) {
      showError(error, err.message || "Something went wrong. Please try again.");
    }
  });
  form.append(resend, sent);
  onSubmit(form, error, async (data) => {
    const address = String(data.get("confirm-email")).trim();
    await api.confirm(address, String(data.get("confirm-code")).trim());
    go(`/signin?email=${encodeURIComponent(address)}`, {
      kind: "ok",
      text: "Your email is confirmed. Sign in with your password.",
    });
  });
  return {
    title: "Confirm your email",
    node: h("div", { class: "page narrow" },
      takeFlash(),
      heading("Confirm your email"),
      h("p", { class: "notice info" }, ...NO_MAIL),
      form,
    ),
  };
}

export async function signin(_params, query) {
  const next = query.get("next") || "/";
  const error = formError();
  const form = h("form", { class: "card form" },
    error,
    field("signin-email", "Email", {
      type: "email", required: true, autocomplete: "username", value: query.get("email") || "",
    }),
    field("signin-password", "Password", { type: "password", required: true, autocomplete: "current-password" }),
    h("button", { type: "submit" }, "Sign in"),
    h("p", { class: "muted" }, "New here? ", h("a", { href: "#/signup" }, "Create an account"),
      " · ", h("a", { href: `#/confirm?email=${encodeURIComponent(query.get("email") || "")}` }, "Enter a confirmation code")),
  );
  onSubmit(form, error, async (data) => {
    const email = String(data.get("signin-email")).trim();
    try {
      await api.signin(email, String(data.get("signin-password")));
    } catch (err) {
      if (err.status === 403) {
        throw new api.ApiError(403, err.code, "Please confirm your email with the code first (see “Enter a confirmation code” below).");
      }
      throw err;
    }
    shop.forgetCart();
    await shop.loadCart().catch(() => null);
    go(next.startsWith("/") && !next.startsWith("/signin") ? next : "/", { kind: "ok", text: `Signed in as ${email}.` });
  });
  return {
    title: "Sign in",
    node: h("div", { class: "page narrow" }, takeFlash(), heading("Sign in"), form),
  };
}

export async function category({ name }) {
  const [books, bar] = await Promise.all([api.books(name), categoryBar(name)]);
  return {
    title: name,
    node: h("div", { class: "page" },
      takeFlash(),
      bar,
      heading(name, h("span", { class: "count" }, ` · ${books.length} book${books.length === 1 ? "" : "s"}`)),
      books.length
        ? bookGrid(books, `Books in ${name}`)
        : h("p", {}, "No books in this category yet. ", h("a", { href: "#/" }, "Back to the store")),
    ),
  };
}

export async function search(_params, query) {
  const q = (query.get("q") || "").trim();
  const input = document.getElementById("search-input");
  if (input && input.value !== q) input.value = q;
  if (!q) {
    return { title: "Search", node: h("div", { class: "page" }, heading("Search"), searchForm()) };
  }
  const books = await api.search(q);
  return {
    title: `Search: ${q}`,
    node: h("div", { class: "page" },
      heading(`Results for “${q}”`, h("span", { class: "count" }, ` · ${books.length} found`)),
      books.length
        ? bookGrid(books, `Search results for ${q}`)
        : h("p", {}, "No books match. Try a word from a title, an author's name or a category such as ",
            h("a", { href: "#/category/Cookbooks" }, "Cookbooks"), "."),
    ),
  };
}

export async function bestsellers() {
  const ranked = await rankedBooks();
  return {
    title: "Best sellers",
    node: h("div", { class: "page" },
      heading("Best sellers", h("span", { class: "count" }, " · top 20 by copies sold")),
      ranked.length
        ? h("ol", { class: "book-grid ranked", "aria-label": "Best sellers, best first" },
            ranked.map(({ book, quantity }, i) => {
              const card = bookCard(book, h("p", { class: "sold" }, `${quantity} sold`));
              card.prepend(h("span", { class: "rank", "aria-label": `Number ${i + 1}` }, `#${i + 1}`));
              return card;
            }))
        : h("p", {}, "No sales yet: the first order makes the first best seller. ",
            h("a", { href: "#/" }, "Find a book")),
    ),
  };
}

export async function book({ id }) {
  const b = await api.book(id);
  const quantity = h("select", { id: "quantity", name: "quantity" },
    Array.from({ length: 10 }, (_, i) => h("option", { value: String(i + 1) }, String(i + 1))));
  const add = h("button", { type: "button" }, "Add to cart");
  add.addEventListener("click", () => addAndTell(b, Number(quantity.value), add));
  return {
    title: b.name,
    node: h("div", { class: "page" },
      h("nav", { class: "crumbs", "aria-label": "Breadcrumb" },
        h("a", { href: "#/" }, "Home"), " › ",
        h("a", { href: `#/category/${encodeURIComponent(b.category)}` }, b.category)),
      h("article", { class: "book-page" },
        cover(b, "large"),
        h("div", { class: "book-details" },
          heading(b.name),
          h("p", { class: "author" }, "by ", b.author),
          stars(b.rating),
          h("p", { class: "price big" }, dollars(cents(b.price))),
          h("p", {}, "Category: ", h("a", { href: `#/category/${encodeURIComponent(b.category)}` }, b.category)),
          h("div", { class: "buy" },
            h("label", { for: "quantity" }, "Quantity"), quantity, add),
        ),
      ),
    ),
  };
}

export async function cart() {
  requireSession();
  const [loaded, byId] = await Promise.all([shop.loadCart(), shop.booksById()]);
  let rows = loaded;
  const page = h("div", { class: "page" }, takeFlash(), heading("Your cart"));
  const body = h("div", {});
  page.append(body);

  const draw = () => {
    const current = rows.slice().sort((a, b) => a.bookId.localeCompare(b.bookId));
    if (!current.length) {
      fill(body, h("p", { class: "empty" }, "Your cart is empty. ", h("a", { href: "#/bestsellers" }, "See what others buy"), " or ",
        h("a", { href: "#/" }, "browse the categories"), "."));
      return;
    }
    const total = shop.totalCents(current);
    fill(body,
      h("table", { class: "cart-table" },
        h("caption", { class: "visually-hidden" }, "Books in your cart, with quantities and prices"),
        h("thead", {}, h("tr", {},
          h("th", { scope: "col" }, "Book"), h("th", { scope: "col" }, "Price"),
          h("th", { scope: "col" }, "Quantity"), h("th", { scope: "col" }, "Subtotal"),
          h("th", { scope: "col" }, h("span", { class: "visually-hidden" }, "Remove")))),
        h("tbody", {}, current.map((row) => cartRow(row, byId.get(row.bookId)))),
        h("tfoot", {}, h("tr", {},
          h("th", { scope: "row", colspan: "3" }, "Total"),
          h("td", { class: "total", id: "cart-total" }, dollars(total)), h("td", {}))),
      ),
      h("div", { class: "actions" },
        h("a", { href: "#/", class: "button secondary" }, "Keep shopping"),
        h("a", { href: "#/checkout", class: "button" }, `Check out (${dollars(total)})`)),
    );
  };

  const cartRow = (row, b) => {
    const title = b ? b.name : row.bookId;
    const status = h("span", { class: "row-status", role: "status" });
    const qty = h("input", {
      type: "number", min: "1", max: String(shop.MAX_QUANTITY), value: String(row.quantity),
      inputmode: "numeric", "aria-label": `Quantity of ${title}`, class: "qty",
    });
    qty.addEventListener("change", async () => {
      const n = Number(qty.value);
      if (!Number.isInteger(n) || n < 1 || n > shop.MAX_QUANTITY) {
        fill(status, `Choose 1 to ${shop.MAX_QUANTITY}.`);
        qty.value = String(row.quantity);
        return;
      }
      qty.disabled = true;
      try {
        rows = await shop.setQuantity(row.bookId, n);
        draw();
        body.querySelector(`tr[data-book-id="${CSS.escape(row.bookId)}"] input`)?.focus();
      } catch (err) {
        qty.disabled = false;
        qty.value = String(row.quantity);
        fill(status, err.message);
      }
    });
    const remove = h("button", { type: "button", class: "link danger", "aria-label": `Remove ${title}` }, "Remove");
    remove.addEventListener("click", async () => {
      remove.disabled = true;
      try {
        rows = await shop.removeFromCart(row.bookId);
        toast(`Removed “${title}”.`);
        draw();
        document.getElementById("main").querySelector("h1")?.focus();
      } catch (err) {
        remove.disabled = false;
        fill(status, err.message);
      }
    });
    return h("tr", { dataset: { bookId: row.bookId } },
      h("td", { class: "book-cell" }, b ? cover(b, "small") : null,
        h("a", { href: `#/book/${encodeURIComponent(row.bookId)}` }, title)),
      h("td", { "data-label": "Price" }, dollars(cents(row.price))),
      h("td", { "data-label": "Quantity" }, qty, status),
      h("td", { "data-label": "Subtotal", class: "subtotal" }, dollars(cents(row.price) * row.quantity)),
      h("td", {}, remove),
    );
  };

  draw();
  return { title: "Cart", node: page };
}

export async function checkout() {
  requireSession();
  const [rows, byId] = await Promise.all([shop.loadCart(), shop.booksById()]);
  if (!rows.length) {
    return {
      title: "Checkout",
      node: h("div", { class: "page narrow" }, heading("Checkout"),
        h("p", {}, "Your cart is empty, so there is nothing to pay for. ", h("a", { href: "#/" }, "Find a book"))),
    };
  }
  const total = shop.totalCents(rows);
  const error = formError();
  const pay = h("button", { type: "submit", class: "pay" }, `Pay (${dollars(total)})`);
  const form = h("form", { class: "card form", "aria-labelledby": "card-heading" },
    h("h2", { id: "card-heading" }, "Payment"),
    h("p", { class: "notice info" }, "A demo: no card is charged and nothing is stored. Any well-formed number works."),
    error,
    field("card-name", "Name on card", { type: "text", required: true, autocomplete: "cc-name", maxlength: "100" }),
    field("card-number", "Card number", {
      type: "text", required: true, inputmode: "numeric", autocomplete: "cc-number",
      pattern: "[0-9 ]{12,23}", value: "4242 4242 4242 4242", maxlength: "23",
    }),
    h("div", { class: "field-row" },
      field("card-expiry", "Expiry (MM/YY)", {
        type: "text", required: true, inputmode: "numeric", autocomplete: "cc-exp", pattern: "(0[1-9]|1[0-2])/[0-9]{2}",
        value: "12/34", maxlength: "5",
      }),
      field("card-cvc", "Security code", {
        type: "text", required: true, inputmode: "numeric", autocomplete: "cc-csc", pattern: "[0-9]{3,4}",
        value: "123", maxlength: "4",
      }),
    ),
    pay,
  );
  const lines = rows.map((r) => ({ bookId: r.bookId, quantity: r.quantity }));
  onSubmit(form, error, async () => {
    const key = shop.checkoutKey(lines);
    pay.textContent = "Paying…";
    let order;
    try {
      order = await api.placeOrder(lines, key);
    } catch (err) {
      pay.textContent = `Pay (${dollars(total)})`;
      if (err.status >= 400 && err.status < 500) shop.checkoutDone(); // refused: a new attempt gets a new key
      throw err.status === 0 || err.status >= 500
        ? new api.ApiError(err.status, err.code, `${err.message} Your card was not charged twice: paying again retries the same order.`)
        : err;
    }
    shop.checkoutDone();
    shop.forgetRows(lines.map((l) => l.bookId));
    shop.rememberOrder(order, api.servedBy());
    go(`/confirmation/${encodeURIComponent(order.orderId)}`);
  });
  return {
    title: "Checkout",
    node: h("div", { class: "page checkout" },
      heading("Checkout"),
      h("div", { class: "checkout-grid" },
        h("section", { class: "card summary", "aria-labelledby": "summary-heading" },
          h("h2", { id: "summary-heading" }, "Your order"),
          h("ul", { class: "lines" }, rows.map((r) => {
            const b = byId.get(r.bookId);
            return h("li", {}, b ? cover(b, "small") : null,
              h("span", { class: "line-title" }, b ? b.name : r.bookId),
              h("span", { class: "line-qty" }, `× ${r.quantity}`),
              h("span", { class: "line-sum" }, dollars(cents(r.price) * r.quantity)));
          })),
          h("p", { class: "total-line" }, "Total ", h("strong", { id: "checkout-total" }, dollars(total))),
        ),
        form,
      ),
    ),
  };
}

function orderLines(order, byId) {
  return h("ul", { class: "lines" }, order.books.map((line) => {
    const b = byId.get(line.bookId);
    return h("li", {},
      b ? cover(b, "small") : null,
      h("a", { class: "line-title", href: `#/book/${encodeURIComponent(line.bookId)}` }, b ? b.name : line.bookId),
      h("span", { class: "line-qty" }, `× ${line.quantity}`),
      h("span", { class: "line-sum" }, dollars(cents(line.price) * line.quantity)));
  }));
}

export async function confirmation({ id }) {
  requireSession();
  const byId = await shop.booksById();
  let found = shop.rememberedOrder(id);
  if (!found) {
    const order = (await api.orders()).find((o) => o.orderId === id);
    found = order ? { order, region: null } : null;
  }
  if (!found) {
    return {
      title: "Order not found",
      node: h("div", { class: "page narrow" }, heading("Order not found"),
        h("p", {}, "We could not find this order. It may take a moment to appear; see ", h("a", { href: "#/orders" }, "your orders"), ".")),
    };
  }
  const { order, region } = found;
  return {
    title: "Thank you",
    node: h("div", { class: "page narrow confirmation" },
      heading("Thank you for your order"),
      h("p", { class: "notice ok", role: "status" }, `Order ${order.orderId.slice(0, 12)} is placed. Total paid: ${dollars(cents(order.total))}.`),
      region && region.regionName ? h("p", { class: "muted" }, `Taken by ${region.regionName} (${region.regionId}) on ${when(order.orderDate)}.`) : null,
      orderLines(order, byId),
      h("div", { class: "actions" },
        h("a", { href: "#/orders", class: "button secondary" }, "Past orders"),
        h("a", { href: "#/", class: "button" }, "Keep shopping")),
    ),
  };
}

export async function orders() {
  requireSession();
  const [list, byId] = await Promise.all([api.orders(), shop.booksById()]);
  list.sort((a, b) => b.orderDate - a.orderDate || (a.orderId < b.orderId ? 1 : -1));
  const buyAgain = async (order, button) => {
    button.disabled = true;
    try {
      for (const line of order.books) await shop.addToCart(line.bookId, line.quantity);
      go("/cart", { kind: "ok", text: "The books of that order are in your cart again." });
    } catch (err) {
      toast(err.message, "error");
      button.disabled = false;
    }
  };
  return {
    title: "Past orders",
    node: h("div", { class: "page" },
      takeFlash(),
      heading("Past orders", h("span", { class: "count" }, ` · ${list.length}`)),
      list.length
        ? h("ol", { class: "orders", "aria-label": "Your orders, newest first" }, list.map((order) => {
            const again = h("button", { type: "button", class: "secondary" }, "Buy again");
            again.addEventListener("click", () => buyAgain(order, again));
            return h("li", { class: "card order", dataset: { orderId: order.orderId } },
              h("div", { class: "order-head" },
                h("h2", {}, when(order.orderDate)),
                h("p", { class: "muted" }, `Order ${order.orderId.slice(0, 12)} · ${dollars(cents(order.total))}`),
                again),
              orderLines(order, byId));
          }))
        : h("p", {}, "No orders yet. ", h("a", { href: "#/" }, "Find your first book"), "."),
    ),
  };
}

export async function notFound() {
  return {
    title: "Not found",
    node: h("div", { class: "page narrow" }, heading("Page not found"),
      h("p", {}, "There is no page here. ", h("a", { href: "#/" }, "Go to the store's home page"), ".")),
  };
}

/** What a page shows when it could not be built: the reason, and a way to try again. */
export function failure(err, retry) {
  const again = h("button", { type: "button" }, "Try again");
  again.addEventListener("click", retry);
  return {
    title: "Something went wrong",
    node: h("div", { class: "page narrow" },
      heading("Sorry, that did not work"),
      notice("error", err && err.message ? err.message : "Something went wrong."),
      h("div", { class: "actions" }, again, h("a", { href: "#/", class: "button secondary" }, "Home"))),
  };
}
