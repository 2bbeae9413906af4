// Kizo's wallet: one page whose path names the view. Every view is built from the API's
// answers with text nodes only; money is shown from minor units exactly (money.js).
import { h, fill, announce, field, notice, busy, when } from "./dom.js";
import { formatMoney, parseAmount } from "./money.js";
import * as api from "./api.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
/** The signed-in user and their wallet (`GET /v1/me`), or null. */
let me = null;
/** Bumped on every navigation: a view that finishes after the next one started is dropped. */
let generation = 0;

const PUBLIC = {
  "/signin": signInView,
  "/signup": signUpView,
  "/forgot-password": forgotView,
  "/reset-password": resetView,
  "/verify-email": verifyView,
};
const PRIVATE = {
  "/": dashboardView,
  "/send": sendView,
  "/transactions": transactionsView,
  "/deposit": (q) => settlementView("deposit", q),
  "/withdraw": (q) => settlementView("withdrawal", q),
  "/profile": profileView,
};
const MENU = [
  ["/", "Dashboard"], ["/send", "Send"], ["/transactions", "Transactions"],
  ["/deposit", "Add money"], ["/withdraw", "Withdraw"], ["/profile", "Profile"],
];
const FINAL = new Set(["succeeded", "failed", "needs_review"]);
const PAYMENT_KEY = "kizo-payment";

function wallet() { return me.accounts[0]; }
function currency() { return wallet().currency; }
function money(minor, options) { return formatMoney(minor, currency(), options); }

export function go(path, { replace = false } = {}) {
  history[replace ? "replaceState" : "pushState"]({}, "", path);
  render();
}

document.addEventListener("click", (event) => {
  const link = event.target.closest("a[data-link]");
  if (!link || link.origin !== location.origin || event.button !== 0) return;
  if (event.metaKey || event.ctrlKey || event.shiftKey || event.altKey) return;
  event.preventDefault();
  go(link.pathname + link.search);
});
window.addEventListener("popstate", render);
api.onSessionChange((signedIn) => {
  if (!signedIn) { me = null; stopLive(); go("/signin", { replace: true }); }
});

/** A user's picture, or their initials when they have none; beside their name, so it says
 * nothing more to a screen reader (`alt=""`) unless `alt` is given. */
function avatar(user, size, alt = "") {
  if (user.avatar_url) return h("img", { class: `avatar ${size}`, src: user.avatar_url, alt, width: 160, height: 160 });
  const initials = `${(user.first_name || "?")[0]}${(user.last_name || "")[0] || ""}`.toUpperCase();
  return h("span", { class: `avatar ${size} initials`, "aria-hidden": "true" }, initials);
}

async function loadMe() {
  const answer = await api.call("GET", "/v1/me");
  me = answer.ok ? answer.data : null;
  if (me) startLive(); else stopLive();
  return me;
}

// ---- Live: the dashboard follows the wallet's events ------------------------------------

let live = null; // the listener's AbortController while signed in
let liveTimer = null;

function startLive() {
  if (live) return;
  live = new AbortController();
  api.listen(onLive, live.signal);
}

function stopLive() {
  if (live) live.abort();
  live = null;
}

/** An event of the wallet's: the dashboard, if shown, is drawn again (once for a burst), in
 * place, and what happened is announced; the focus stays where it is. */
function onLive(kind, data) {
  clearTimeout(liveTimer);
  liveTimer = setTimeout(async () => {
    if (location.pathname !== "/" || !me) return;
    const number = ++generation;
    const [, node] = await dashboardView();
    if (number !== generation) return;
    fill(main, node);
    const t = data.transfer;
    if (t && kind === "transfer.posted") announce(`${t.direction === "in" ? "Received" : "Sent"} ${money(t.amount)}`);
  }, 200);
}

async function render() {
  const number = ++generation;
  const path = location.pathname;
  const query = new URLSearchParams(location.search);
  const detail = /^\/transactions\/([0-9a-f-]{36})$/.exec(path);
  const view = PUBLIC[path] || PRIVATE[path] || (detail ? () => transactionView(detail[1]) : null);
  if (!view) return show(number, "Not found", h("section", { class: "card narrow" },
    h("h1", {}, "Page not found"), h("p", {}, h("a", { href: "/", "data-link": true }, "Go to your dashboard"))));
  // Signed out at "/": the landing page, a page of its own that runs no script.
  if (path === "/" && !me) return location.replace("/welcome");
  const isPrivate = !!PRIVATE[path] || !!detail;
  if (isPrivate && !me) {
    return go(`/signin?next=${encodeURIComponent(path + location.search)}`, { replace: true });
  }
  if (me && (path === "/signin" || path === "/signup")) return go("/", { replace: true });
  menu(path);
  try {
    const [title, node] = await view(query);
    show(number, title, node);
  } catch (error) {
    console.error(error);
    show(number, "Error", notice("error", "This page could not be shown. Reload to try again."));
  }
}

function show(number, title, node) {
  if (number !== generation) return;
  document.title = `${title} · Kizo`;
  fill(main, node);
  const heading = main.querySelector("h1");
  (heading || main).setAttribute("tabindex", "-1");
  (heading || main).focus({ preventScroll: true });
}

function menu(path) {
  if (!me) {
    fill(nav, h("ul", {},
      h("li", {}, h("a", { href: "/signin", "data-link": true, "aria-current": path === "/signin" ? "page" : null }, "Sign in")),
      h("li", {}, h("a", { href: "/signup", "data-link": true, "aria-current": path === "/signup" ? "page" : null }, "Sign up"))));
    return;
  }
  const current = (href) => (href === path || (href === "/transactions" && path.startsWith("/transactions/")) ? "page" : null);
  fill(nav, h("ul", {},
    MENU.map(([href, label]) => h("li", {}, h("a", { href, "data-link": true, "aria-current": current(href) },
      href === "/profile" ? [avatar(me.user, "small"), " "] : null, label))),
    h("li", {}, h("button", { class: "link", type: "button", onclick: signOut }, "Sign out"))));
}

async function signOut() {
  stopLive();
  await api.signOut();
  me = null;
  announce("Signed out");
  go("/signin");
}

// ---- Signing in and up ------------------------------------------------------------------

async function signInView(query) {
  const status = h("div");
  const form = h("form", { novalidate: true },
    field("Email", { type: "email", name: "email", autocomplete: "email", required: true }),
    field("Password", { type: "password", name: "password", autocomplete: "current-password", required: true }),
    h("button", { type: "submit" }, "Sign in"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const { email, password } = Object.fromEntries(new FormData(form));
      const answer = await api.signIn(email, password);
      if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
      await loadMe();
      const next = query.get("next");
      go(next && next.startsWith("/") && !next.startsWith("//") ? next : "/");
    });
  });
  return ["Sign in", h("section", { class: "card narrow" },
    h("h1", {}, "Sign in"), status, form,
    h("p", {}, h("a", { href: "/forgot-password", "data-link": true }, "Forgot your password?")),
    h("p", { class: "muted" }, "New to Kizo? ", h("a", { href: "/signup", "data-link": true }, "Create an account")))];
}

async function signUpView() {
  const status = h("div");
  const form = h("form", { novalidate: true },
    h("div", { class: "row" },
      field("First name", { name: "first_name", autocomplete: "given-name", required: true, maxlength: 100 }),
      field("Last name", { name: "last_name", autocomplete: "family-name", required: true, maxlength: 100 })),
    field("Email", { type: "email", name: "email", autocomplete: "email", required: true }),
    field("Password", { type: "password", name: "password", autocomplete: "new-password", required: true, minlength: 8, maxlength: 128 }, "8 to 128 characters"),
    h("button", { type: "submit" }, "Create my account"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const body = Object.fromEntries(new FormData(form));
      const created = await api.anonymous("/v1/auth/signup", body);
      if (!created.ok) return fill(status, notice("error", api.describe(created.problem)));
      const signedIn = await api.signIn(body.email, body.password);
      if (!signedIn.ok) return go("/signin");
      await loadMe();
      announce("Account created");
      go("/verify-email?new=1");
    });
  });
  return ["Sign up", h("section", { class: "card narrow" },
    h("h1", {}, "Create your Kizo account"), status, form,
    h("p", { class: "muted" }, "Already have one? ", h("a", { href: "/signin", "data-link": true }, "Sign in")))];
}

async function verifyView(query) {
  const status = h("div");
  const intro = query.get("new")
    ? notice("ok", `Welcome! We sent a code to ${me ? me.user.email : "your email"}. Enter it, or open the link in the mail, so that others can find you and pay you by email.`)
    : h("p", {}, "Enter the code from the mail we sent you.");
  const form = h("form", {},
    field("Code", { name: "token", autocomplete: "one-time-code", required: true, value: query.get("token") || "", spellcheck: "false" }),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Confirm my email"),
      me ? h("a", { class: "button secondary", href: "/", "data-link": true }, "Later") : null));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const token = new FormData(form).get("token").trim();
      const answer = await api.anonymous("/v1/auth/verify-email", { token });
      if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
      if (me) await loadMe();
      fill(status, notice("ok", "Your email is confirmed. ", h("a", { href: me ? "/" : "/signin", "data-link": true }, me ? "Go to your dashboard" : "Sign in")));
      form.remove();
    });
  });
  return ["Confirm your email", h("section", { class: "card narrow" }, h("h1", {}, "Confirm your email"), intro, status, form)];
}

async function forgotView() {
  const status = h("div");
  const form = h("form", {},
    field("Email", { type: "email", name: "email", autocomplete: "email", required: true }),
    h("button", { type: "submit" }, "Send me a link"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const answer = await api.anonymous("/v1/auth/forgot-password", { email: new FormData(form).get("email").trim() });
      if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
      fill(status, notice("ok", "If an account has this email, a link to choose a new password is on its way. It works for 30 minutes."));
    });
  });
  return ["Forgot password", h("section", { class: "card narrow" }, h("h1", {}, "Forgot your password?"), status, form,
    h("p", {}, h("a", { href: "/signin", "data-link": true }, "Back to sign in")))];
}

async function resetView(query) {
  const status = h("div");
  const form = h("form", { novalidate: true },
    field("Code", { name: "token", required: true, value: query.get("token") || "", spellcheck: "false", autocomplete: "one-time-code" }),
    field("New password", { type: "password", name: "password", autocomplete: "new-password", required: true, minlength: 8, maxlength: 128 }, "8 to 128 characters"),
    field("New password, again", { type: "password", name: "again", autocomplete: "new-password", required: true }),
    h("button", { type: "submit" }, "Change my password"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const { token, password, again } = Object.fromEntries(new FormData(form));
      if (password !== again) return fill(status, notice("error", "The two passwords differ."));
      const answer = await api.anonymous("/v1/auth/reset-password", { token: token.trim(), password });
      if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
      fill(status, notice("ok", "Your password is changed, and every session is signed out. ", h("a", { href: "/signin", "data-link": true }, "Sign in")));
      form.remove();
    });
  });
  return ["Choose a new password", h("section", { class: "card narrow" }, h("h1", {}, "Choose a new password"), status, form)];
}

// ---- Dashboard --------------------------------------------------------------------------

async function dashboardView() {
  const id = wallet().id;
  const [board, series] = await Promise.all([
    api.call("GET", "/v1/dashboard"),
    api.call("GET", `/v1/accounts/${id}/balances?days=30`),
  ]);
  if (!board.ok) return ["Dashboard", notice("error", api.describe(board.problem))];
  const d = board.data;
  const figure = (label, value) => h("div", { class: "figure" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  return ["Dashboard", h("section", {},
    h("h1", {}, `Hello, ${me.user.first_name}`),
    me.user.email_verified ? null : notice("warn", "Confirm your email so that others can find you and pay you by email. ",
      h("a", { href: "/verify-email", "data-link": true }, "Enter the code")),
    h("h2", {}, "Balance"),
    h("div", { class: "grid" },
      figure("Available", money(d.account.available)),
      figure("Held", money(d.account.held)),
      figure("Incoming", money(d.account.incoming))),
    h("h2", {}, "This month"),
    h("div", { class: "grid" },
      figure("Sent", money(d.sent_this_month)),
      figure("Received", money(d.received_this_month)),
      figure("Transfers", String(d.transfers_this_month))),
    h("h2", {}, "The last 30 days"),
    series.ok ? chart(series.data.days) : notice("warn", api.describe(series.problem)),
    h("h2", {}, "Latest transfers"),
    transferTable(d.latest, "No transfers yet. Add money or ask a friend to pay you."),
    h("p", {}, h("a", { href: "/transactions", "data-link": true }, "All transactions")),
    h("div", { class: "actions" },
      h("a", { class: "button", href: "/send", "data-link": true }, "Send money"),
      h("a", { class: "button secondary", href: "/deposit", "data-link": true }, "Add money")))];
}

/** The balance over days as a line (an SVG drawn from the closing balances). */
function chart(days) {
  const known = days.filter((d) => d.closing !== null);
  if (known.length === 0) return h("p", { class: "muted" }, "The history is too long to chart.");
  // Positions only: the figures shown as text stay exact.
  const values = days.map((d) => (d.closing === null ? null : Number(BigInt(d.closing))));
  const present = values.filter((v) => v !== null);
  const low = Math.min(0, ...present);
  const high = Math.max(...present, low + 1);
  const width = 600; const height = 160; const pad = 22;
  const x = (i) => pad + (i * (width - 2 * pad)) / Math.max(1, days.length - 1);
  const y = (v) => height - pad - ((v - low) * (height - 2 * pad)) / (high - low);
  const points = values.map((v, i) => (v === null ? null : `${x(i).toFixed(1)},${y(v).toFixed(1)}`)).filter(Boolean);
  const first = known[0]; const last = known[known.length - 1];
  const highest = known.reduce((a, d) => (BigInt(d.closing) > BigInt(a.closing) ? d : a));
  const label = `Balance over the last ${days.length} days: ${money(first.closing)} on ${first.date}, ${money(last.closing)} on ${last.date}.`;
  const area = `${points[0].split(",")[0]},${y(low)} ${points.join(" ")} ${points[points.length - 1].split(",")[0]},${y(low)}`;
  return h("figure", { class: "card chart" },
    h("svg:svg", { viewBox: `0 0 ${width} ${height}`, role: "img", "aria-label": label },
      h("svg:polygon", { class: "area", points: area }),
      h("svg:line", { class: "axis", x1: pad, x2: width - pad, y1: y(low), y2: y(low) }),
      h("svg:polyline", { class: "line", points: points.join(" ") }),
      h("svg:text", { x: pad, y: height - 4 }, first.date),
      h("svg:text", { x: width - pad, y: height - 4, "text-anchor": "end" }, last.date),
      h("svg:text", { x: pad, y: 14 }, `Highest ${money(highest.closing)}`)),
    h("figcaption", { class: "muted" }, label));
}

/** A list of transfers as a table; each links to its detail. */
function transferTable(transfers, empty) {
  if (transfers.length === 0) return h("p", { class: "muted" }, empty);
  const mine = wallet().id;
  return h("div", { class: "table-wrap" }, h("table", {},
    h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Date"), h("th", { scope: "col" }, "What"),
      h("th", { scope: "col", class: "wide" }, "Status"), h("th", { scope: "col", class: "amount" }, "Amount"))),
    h("tbody", {}, transfers.map((t) => {
      const sent = t.from_account_id === mine;
      return h("tr", {},
        h("td", {}, when(t.created_at)),
        h("td", {}, h("a", { href: `/transactions/${t.id}`, "data-link": true }, describeTransfer(t, sent)),
          t.note ? h("div", { class: "muted" }, t.note) : null),
        h("td", { class: "wide" }, h("span", { class: `status ${t.status}` }, t.status)),
        h("td", { class: `amount ${sent ? "out" : "in"}` }, amountOf(t, sent)));
    }))));
}

/** A transfer's amount as it moved the balance; a hold (or its release) moved none. */
function amountOf(t, sent) {
  if (t.status === "pending") return h("span", { class: "muted" }, `${money(t.amount)} held`);
  if (t.status === "voided") return h("span", { class: "muted" }, `${money(t.amount)} released`);
  return money(sent ? -t.amount : t.amount, { sign: true });
}

function describeTransfer(t, sent) {
  if (t.kind === "deposit") return "Added from your bank";
  if (t.kind === "withdrawal") return t.status === "pending" ? "Withdrawal: money held" : t.status === "voided" ? "Withdrawal: hold released" : "Withdrawn to your bank";
  return `${sent ? "Sent to" : "Received from"} ${sent ? party(t.to_name, t.to_account_id) : party(t.from_name, t.from_account_id)}`;
}

/** A party to a payment: their name, or their wallet's first digits if the wallet is no user's. */
function party(name, account) {
  return name || `wallet ${account.slice(0, 8)}`;
}

// ---- Sending money ----------------------------------------------------------------------

/**
 * The payment being sent is an attempt: what it pays and its one Idempotency-Key. It is kept
 * in sessionStorage until an answer comes, so that a double click, a retry after a timeout or
 * a reload sends the same key, and the server pays it once.
 */
function pendingPayment() {
  try { return JSON.parse(sessionStorage.getItem(PAYMENT_KEY)); } catch { return null; }
}

async function sendView() {
  const pending = pendingPayment();
  const section = h("section", { class: "card" });
  if (pending) confirmStep(section, pending, true);
  else paymentForm(section, {});
  return ["Send money", section];
}

function paymentForm(section, draft) {
  const status = h("div");
  let chosen = draft.to ? { to: draft.to, label: draft.label } : null;
  const results = h("ul", { class: "results", "aria-label": "People found" });
  const chosenNote = h("p", { class: "muted", "aria-live": "polite" }, chosen ? `Paying ${chosen.label}` : "");
  const search = h("input", { id: "recipient", type: "search", name: "q", autocomplete: "off", value: draft.query || "", "aria-describedby": "search-hint" });
  let timer = null;
  const choose = (to, label, button) => {
    chosen = { to, label };
    results.querySelectorAll("button").forEach((b) => b.setAttribute("aria-pressed", String(b === button)));
    fill(chosenNote, `Paying ${label}`);
  };
  const find = async () => {
    const q = search.value.trim();
    fill(results);
    if (q.length < 3) return;
    const answer = await api.call("GET", `/v1/users?q=${encodeURIComponent(q)}`);
    if (!answer.ok) return fill(results, h("li", {}, notice("error", api.describe(answer.problem))));
    const users = answer.data.users.filter((u) => u.account_id !== wallet().id);
    if (users.length === 0) fill(results, h("li", { class: "muted" }, "Nobody found. People appear once they confirm their email."));
    else fill(results, users.map((u) => {
      const label = `${u.first_name} ${u.last_name}${u.email ? ` (${u.email})` : ""}`;
      const button = h("button", { type: "button", "aria-pressed": "false" }, avatar(u, "small"), " ", label);
      button.addEventListener("click", () => choose({ account_id: u.account_id }, label, button));
      return h("li", {}, button);
    }));
    announce(`${users.length} found`);
  };
  search.addEventListener("input", () => { clearTimeout(timer); timer = setTimeout(find, 250); });
  const form = h("form", { novalidate: true },
    h("div", { class: "field" }, h("label", { for: "recipient" }, "Recipient"),
      h("span", { class: "hint", id: "search-hint" }, "The start of a name (3 letters or more), or a whole email"), search),
    results, chosenNote,
    field(`Amount (${currency()})`, { name: "amount", inputmode: "decimal", autocomplete: "off", required: true, value: draft.amountText || "" }),
    field("Note", { name: "note", maxlength: 140, value: draft.note || "" }, "Optional, seen by both of you"),
    h("button", { type: "submit" }, "Review"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const data = Object.fromEntries(new FormData(form));
    if (!chosen) {
      const typed = search.value.trim();
      if (!typed.includes("@")) return fill(status, notice("error", "Choose who to pay from the list, or type their email."));
      chosen = { to: { email: typed.toLowerCase() }, label: typed.toLowerCase() };
    }
    const amount = parseAmount(data.amount, currency());
    if (amount.error) return fill(status, notice("error", amount.error));
    const attempt = {
      key: crypto.randomUUID(),
      to: chosen.to,
      label: chosen.label,
      amount: amount.minor.toString(),
      amountText: data.amount,
      note: data.note.trim() || null,
      query: search.value,
    };
    sessionStorage.setItem(PAYMENT_KEY, JSON.stringify(attempt));
    confirmStep(section, attempt, false);
  });
  fill(section, h("h1", {}, "Send money"),
    h("p", { class: "muted" }, `Available: ${money(wallet().available)}`), status, form);
}

function confirmStep(section, attempt, resumed) {
  const status = h("div");
  const send = h("button", { type: "submit" }, `Send ${money(attempt.amount)}`);
  const change = h("button", { type: "button", class: "secondary" }, "Change");
  const form = h("form", {}, h("div", { class: "actions" }, send, change));
  change.addEventListener("click", () => {
    sessionStorage.removeItem(PAYMENT_KEY);
    paymentForm(section, attempt);
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      fill(status, h("p", { class: "muted" }, "Sending…"));
      const body = { from_account_id: wallet().id, to: attempt.to, amount: Number(attempt.amount) };
      if (attempt.note) body.note = attempt.note;
      const answer = await api.call("POST", "/v1/transfers", { body, idempotencyKey: attempt.key });
      if (answer.ok) {
        sessionStorage.removeItem(PAYMENT_KEY);
        await loadMe();
        announce("Payment sent");
        fill(section, h("h1", {}, "Sent"),
          notice("ok", `You sent ${money(answer.data.amount)} to ${attempt.label}.`),
          h("div", { class: "actions" },
            h("a", { class: "button", href: `/transactions/${answer.data.id}`, "data-link": true }, "See the payment"),
            h("a", { class: "button secondary", href: "/send", "data-link": true }, "Send another")));
        section.querySelector("h1").focus();
        return;
      }
      const unsure = answer.network || answer.status >= 500 || answer.status === 409;
      if (unsure) {
        // The same key goes with the next try: the server pays it once, whatever happened.
        fill(status, notice("warn", `${api.describe(answer.problem)} It may or may not have gone through: press Send again to find out; it will never be paid twice.`));
        return;
      }
      if (answer.problem?.code !== "signed_out" && answer.status !== 429) sessionStorage.removeItem(PAYMENT_KEY);
      fill(status, notice("error", `Not sent: ${api.describe(answer.problem)}`));
      if (answer.status !== 429) send.remove();
    });
  });
  fill(section, h("h1", {}, "Confirm the payment"),
    resumed ? notice("warn", "This payment was being sent when the page was reloaded. Send it again to finish: it will never be paid twice.") : null,
    h("dl", { class: "facts" },
      h("dt", {}, "To"), h("dd", {}, attempt.label),
      h("dt", {}, "Amount"), h("dd", { class: "amount-big" }, money(attempt.amount)),
      h("dt", {}, "Note"), h("dd", {}, attempt.note || "none")),
    status, form);
}

// ---- Transactions -----------------------------------------------------------------------

async function transactionsView(query) {
  const filters = {
    direction: query.get("direction") || "all",
    status: query.get("status") || "all",
    from: query.get("from") || "",
    to: query.get("to") || "",
  };
  const cursor = query.get("cursor");
  const params = new URLSearchParams({ limit: "20" });
  for (const [name, value] of Object.entries(filters)) if (value && value !== "all") params.set(name, value);
  if (cursor) params.set("cursor", cursor);
  const answer = await api.call("GET", `/v1/accounts/${wallet().id}/transfers?${params}`);
  const form = h("form", { class: "card", "aria-label": "Filters" },
    h("div", { class: "row" },
      field("Direction", { tag: "select", name: "direction", value: filters.direction, options: [["all", "All"], ["sent", "Sent"], ["received", "Received"]] }),
      field("Status", { tag: "select", name: "status", value: filters.status, options: [["all", "All"], ["posted", "Posted"], ["pending", "Pending"]] }),
      field("From", { type: "date", name: "from", value: filters.from }),
      field("To", { type: "date", name: "to", value: filters.to })),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Show"),
      h("button", { type: "button", class: "secondary", onclick: () => downloadCsv(filters) }, "Download CSV")));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const chosen = new URLSearchParams();
    for (const [name, value] of new FormData(form)) if (value && value !== "all") chosen.set(name, value);
    go(`/transactions${chosen.size ? "?" + chosen : ""}`);
  });
  const pager = h("div", { class: "actions" });
  if (cursor) pager.append(h("button", { type: "button", class: "secondary", onclick: () => history.back() }, "Newer"));
  if (answer.ok && answer.data.next_cursor) {
    const next = new URLSearchParams(query);
    next.set("cursor", answer.data.next_cursor);
    pager.append(h("a", { class: "button secondary", href: `/transactions?${next}`, "data-link": true }, "Older"));
  }
  return ["Transactions", h("section", {},
    h("h1", {}, "Transactions"), form, h("h2", { class: "visually-hidden" }, "Results"),
    answer.ok ? transferTable(answer.data.transfers, "No transfers match.") : notice("error", api.describe(answer.problem)),
    pager)];
}

async function downloadCsv(filters) {
  const params = new URLSearchParams();
  if (filters.direction !== "all") params.set("direction", filters.direction);
  if (filters.from) params.set("from", filters.from);
  if (filters.to) params.set("to", filters.to);
  const answer = await api.call("GET", `/v1/accounts/${wallet().id}/transfers.csv?${params}`, { accept: "text/csv" });
  if (!answer.ok) return announce(api.describe(answer.problem));
  const url = URL.createObjectURL(answer.data);
  const link = h("a", { href: url, download: "kizo-transactions.csv" });
  document.body.append(link);
  link.click();
  link.remove();
  setTimeout(() => URL.revokeObjectURL(url), 10_000);
  announce("CSV downloaded");
}

async function transactionView(id) {
  const answer = await api.call("GET", `/v1/transfers/${id}`);
  if (!answer.ok) return ["Transaction", h("section", { class: "card" }, h("h1", {}, "Transaction"), notice("error", api.describe(answer.problem)))];
  const t = answer.data;
  const sent = t.from_account_id === wallet().id;
  return ["Transaction", h("section", { class: "card" },
    h("h1", {}, describeTransfer(t, sent)),
    h("dl", { class: "facts" },
      h("dt", {}, "Amount"), h("dd", { class: sent ? "out" : "in" }, amountOf(t, sent)),
      h("dt", {}, "Status"), h("dd", {}, h("span", { class: `status ${t.status}` }, t.status)),
      h("dt", {}, "Kind"), h("dd", {}, t.kind),
      h("dt", {}, "Date"), h("dd", {}, when(t.created_at), h("span", { class: "muted" }, ` (${t.created_at})`)),
      h("dt", {}, "From"), h("dd", {}, t.from_name ? `${t.from_name}, ` : "", h("span", { class: "muted" }, `wallet ${t.from_account_id}`)),
      h("dt", {}, "To"), h("dd", {}, t.to_name ? `${t.to_name}, ` : "", h("span", { class: "muted" }, `wallet ${t.to_account_id}`)),
      h("dt", {}, "Note"), h("dd", {}, t.note || "none"),
      h("dt", {}, "Id"), h("dd", {}, t.id)),
    h("p", {}, h("a", { href: "/transactions", "data-link": true }, "All transactions")))];
}

// ---- Deposits and withdrawals -----------------------------------------------------------

async function settlementView(kind) {
  const deposit = kind === "deposit";
  const title = deposit ? "Add money" : "Withdraw";
  const status = h("div", { "aria-live": "polite" });
  let key = crypto.randomUUID();
  const form = h("form", { novalidate: true },
    field(`Amount (${currency()})`, { name: "amount", inputmode: "decimal", autocomplete: "off", required: true }),
    h("button", { type: "submit" }, deposit ? "Add from my bank" : "Withdraw to my bank"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const amount = parseAmount(new FormData(form).get("amount"), currency());
      if (amount.error) return fill(status, notice("error", amount.error));
      const answer = await api.call("POST", `/v1/${kind}s`, {
        body: { account_id: wallet().id, amount: Number(amount.minor) }, idempotencyKey: key,
      });
      if (answer.network || answer.status >= 500) {
        return fill(status, notice("warn", `${api.describe(answer.problem)} Press the button again: the same request is sent, never a second one.`));
      }
      key = crypto.randomUUID();
      if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
      await follow(kind, answer.data, status);
    });
  });
  return [title, h("section", { class: "card narrow" }, h("h1", {}, title),
    h("p", { class: "muted" }, deposit ? "Money comes from your bank account on file." : `Available: ${money(wallet().available)}. It goes to your bank account on file.`),
    form, status)];
}

/** Shows a settlement's status, polling it until it is final. */
async function follow(kind, settlement, status) {
  const started = generation;
  const words = {
    pending: "Waiting for the bank…", processing: "The bank is working on it…",
    succeeded: kind === "deposit" ? "Done: the money is in your wallet." : "Done: the money is on its way to your bank.",
    failed: `It failed${settlement.reason ? `: ${settlement.reason}` : ""}.`,
    needs_review: "The bank did not say what happened. Our team will check and settle it.",
  };
  let current = settlement;
  for (let polls = 0; ; polls++) {
    const final = FINAL.has(current.status);
    const kindClass = current.status === "succeeded" ? "ok" : final ? "error" : "";
    fill(status, notice(kindClass, h("span", { class: `status ${current.status}` }, current.status), " ",
      current.status === "failed" && current.reason ? `It failed: ${current.reason}.` : words[current.status], " ",
      h("span", { class: "muted" }, `${formatMoney(current.amount, current.currency)}`)));
    if (final) {
      announce(words[current.status]);
      await loadMe();
      return;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(500 + polls * 250, 3000)));
    if (generation !== started) return;
    const answer = await api.call("GET", `/v1/${kind}s/${current.id}`);
    if (answer.ok) current = answer.data;
  }
}

// ---- Profile ----------------------------------------------------------------------------

async function profileView() {
  await loadMe();
  const status = h("div");
  const form = h("form", {},
    h("div", { class: "row" },
      field("First name", { name: "first_name", autocomplete: "given-name", value: me.user.first_name, required: true, maxlength: 100 }),
      field("Last name", { name: "last_name", autocomplete: "family-name", value: me.user.last_name, required: true, maxlength: 100 })),
    h("button", { type: "submit" }, "Save"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      const answer = await api.call("PATCH", "/v1/me", { body: Object.fromEntries(new FormData(form)) });
      if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
      me = answer.data;
      fill(status, notice("ok", "Saved."));
    });
  });
  const resend = h("button", { type: "button", class: "secondary" }, "Send the code again");
  resend.addEventListener("click", async () => {
    resend.disabled = true;
    const answer = await api.call("POST", "/v1/auth/verify-email/resend");
    fill(status, answer.ok ? notice("ok", "A new code is on its way.") : notice("error", api.describe(answer.problem)));
  });
  return ["Profile", h("section", { class: "card" },
    h("h1", {}, "Profile"), status,
    h("dl", { class: "facts" },
      h("dt", {}, "Email"), h("dd", {}, me.user.email, " ",
        me.user.email_verified ? h("span", { class: "status succeeded" }, "confirmed") : h("span", { class: "status pending" }, "not confirmed")),
      h("dt", {}, "Wallet"), h("dd", {}, wallet().id),
      h("dt", {}, "Currency"), h("dd", {}, currency())),
    me.user.email_verified ? null : h("div", { class: "actions" }, h("a", { class: "button", href: "/verify-email", "data-link": true }, "Enter the code"), resend),
    h("h2", {}, "Your picture"), pictureForm(),
    h("h2", {}, "Your name"), form,
    h("h2", {}, "Session"),
    h("button", { type: "button", class: "secondary", onclick: signOut }, "Sign out"))];
}

/** The profile's picture: shown, replaced from a file, or removed. The server re-encodes it
 * (a 160x160 PNG, nothing of the file kept but its pixels) and is the judge of what is an
 * image; the size is checked here only to spare a pointless upload. */
function pictureForm() {
  const status = h("div");
  const input = h("input", { id: "picture", type: "file", name: "picture", accept: "image/png,image/jpeg,image/webp", "aria-describedby": "picture-hint" });
  const form = h("form", { class: "picture" },
    h("div", { class: "row" },
      avatar(me.user, "large", me.user.avatar_url ? "Your picture" : ""),
      h("div", { class: "field" }, h("label", { for: "picture" }, "Picture"),
        h("span", { class: "hint", id: "picture-hint" }, "PNG, JPEG or WebP, at most 2 MB and 4096 pixels a side"), input)),
    h("div", { class: "actions" },
      h("button", { type: "submit" }, "Upload"),
      me.user.avatar_url ? h("button", { type: "button", class: "secondary", onclick: () => change("DELETE") }, "Remove my picture") : null),
    status);
  const change = (method, file) => busy(form, async () => {
    const answer = await api.call(method, "/v1/me/avatar", file ? { file } : {});
    if (!answer.ok) return fill(status, notice("error", api.describe(answer.problem)));
    await loadMe();
    await render();
    announce(method === "DELETE" ? "Your picture is removed." : "Your picture is saved.");
  });
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const file = input.files[0];
    if (!file) return fill(status, notice("error", "Choose a picture first."));
    if (file.size > 2 * 1024 * 1024) return fill(status, notice("error", "That picture is over 2 MB."));
    change("PUT", file);
  });
  return form;
}

// ---- Start ------------------------------------------------------------------------------

(async () => {
  // A session from the refresh cookie, if there is one (a reload, a new tab).
  if (await api.refresh().catch(() => false)) await loadMe();
  render();
})();
