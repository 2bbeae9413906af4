// Kizo's operator console: reconciliation, settlements that need review, snapshots and live
// figures, with the admin API key. The key stays in this page's memory only (a reload asks
// for it again): it is never written to storage or a cookie, so no other page can use it.
import { h, fill, announce, field, notice, busy, when } from "./dom.js";
import { formatMoney } from "./money.js";

const main = document.getElementById("main");
const nav = document.getElementById("nav");
let adminKey = null;
let figuresTimer = null;

async function admin(method, path, body) {
  let response;
  try {
    response = await fetch(path, {
      method,
      headers: {
        authorization: `Bearer ${adminKey}`,
        ...(body === undefined ? {} : { "content-type": "application/json" }),
      },
      body: body === undefined ? undefined : JSON.stringify(body),
    });
  } catch {
    return { problem: { detail: "The server could not be reached." } };
  }
  if (response.status === 401) {
    signOut("The admin key was refused.");
    return { problem: { detail: "The admin key was refused." } };
  }
  const type = response.headers.get("content-type") || "";
  const data = type.includes("json") ? await response.json() : await response.text();
  return response.ok ? { ok: true, status: response.status, data } : { status: response.status, problem: data };
}

function problemText(problem) {
  return (problem && (problem.detail || problem.title)) || "Something went wrong.";
}

function signOut(reason) {
  adminKey = null;
  clearInterval(figuresTimer);
  signInView(reason);
}

function signInView(reason) {
  fill(nav);
  const status = h("div");
  const form = h("form", {},
    field("Admin API key", { type: "password", name: "key", autocomplete: "off", required: true, minlength: 32 }, "--admin-api-key, or the file <data-dir>/admin-api-key in development"),
    h("button", { type: "submit" }, "Open the console"));
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    busy(form, async () => {
      adminKey = new FormData(form).get("key").trim();
      const probe = await admin("GET", "/v1/admin/settlements");
      if (!probe.ok) {
        adminKey = null;
        return fill(status, notice("error", problemText(probe.problem)));
      }
      consoleView();
    });
  });
  document.title = "Sign in · Kizo console";
  fill(main, h("section", { class: "card narrow" }, h("h1", {}, "Operator console"),
    reason ? notice("error", reason) : null, status, form));
  main.querySelector("input").focus();
}

function consoleView() {
  fill(nav, h("ul", {},
    h("li", {}, h("a", { href: "#figures" }, "Live figures")),
    h("li", {}, h("a", { href: "#review" }, "Needs review")),
    h("li", {}, h("a", { href: "#reconciliation" }, "Reconciliation")),
    h("li", {}, h("a", { href: "#snapshots" }, "Snapshots")),
    h("li", {}, h("button", { type: "button", class: "link", onclick: () => signOut(null) }, "Sign out"))));
  const figures = h("div", { class: "grid", "aria-live": "off" });
  const review = h("div");
  const reconciliation = h("div");
  const snapshots = h("div");
  document.title = "Kizo console";
  fill(main, h("section", {},
    h("h1", {}, "Operator console"),
    h("h2", { id: "figures" }, "Live figures"), figures,
    h("p", { class: "muted" }, "From the gateway's metrics, every 2 seconds."),
    h("h2", { id: "review" }, "Settlements that need review"), review,
    h("h2", { id: "reconciliation" }, "Reconciliation"), reconciliation,
    h("h2", { id: "snapshots" }, "Snapshots"), snapshots));
  main.querySelector("h1").setAttribute("tabindex", "-1");
  main.querySelector("h1").focus();
  liveFigures(figures);
  reviewList(review);
  reconciliationView(reconciliation);
  snapshotsView(snapshots);
}

// ---- Live figures -----------------------------------------------------------------------

/** Prometheus' text format: [{ name, labels, value }]. */
export function parseMetrics(text) {
  const samples = [];
  for (const line of text.split("\n")) {
    if (!line || line.startsWith("#")) continue;
    const match = /^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})?\s+(\S+)/.exec(line);
    if (!match) continue;
    const labels = {};
    for (const pair of (match[3] || "").matchAll(/([a-zA-Z_]+)="((?:[^"\\]|\\.)*)"/g)) labels[pair[1]] = pair[2];
    samples.push({ name: match[1], labels, value: Number(match[4]) });
  }
  return samples;
}

function sum(samples, name, filter = () => true) {
  return samples.filter((s) => s.name === name && filter(s.labels)).reduce((a, s) => a + s.value, 0);
}

/** Cumulative histogram buckets { le: count } summed over the series that pass `filter`. */
function buckets(samples, name, filter = () => true) {
  const by = new Map();
  for (const s of samples) {
    if (s.name !== `${name}_bucket` || !filter(s.labels)) continue;
    by.set(s.labels.le, (by.get(s.labels.le) || 0) + s.value);
  }
  return by;
}

/** The `q` quantile of what a histogram counted between two scrapes (bucket upper bound). */
function quantile(before, after, q) {
  const bounds = [...after.keys()].sort((a, b) => (a === "+Inf" ? 1 : b === "+Inf" ? -1 : Number(a) - Number(b)));
  const delta = bounds.map((le) => [le, (after.get(le) || 0) - (before.get(le) || 0)]);
  const total = delta.length ? delta[delta.length - 1][1] : 0;
  if (total <= 0) return null;
  const wanted = q * total;
  for (const [le, count] of delta) if (count >= wanted) return le === "+Inf" ? Infinity : Number(le);
  return null;
}

function seconds(value) {
  if (value === null) return "idle";
  if (value === Infinity) return "> 5 s";
  return value < 1 ? `≤ ${(value * 1000).toFixed(value < 0.001 ? 2 : 1)} ms` : `≤ ${value.toFixed(1)} s`;
}

function liveFigures(grid) {
  let previous = null;
  const figure = (label, value) => h("div", { class: "figure" }, h("div", { class: "label" }, label), h("div", { class: "value" }, value));
  const transferRoutes = (l) => l.route === "/v1/transfers" || l.route === "/v1/ledger/transfers";
  const scrape = async () => {
    const answer = await admin("GET", "/v1/admin/metrics");
    if (!answer.ok) return fill(grid, notice("error", problemText(answer.problem)));
    const samples = parseMetrics(answer.data);
    const now = performance.now();
    const current = {
      at: now,
      transfers: sum(samples, "kizo_transfers_total", (l) => l.result === "created"),
      latency: buckets(samples, "kizo_http_request_duration_seconds", transferRoutes),
      flush: buckets(samples, "kizo_wal_flush_seconds"),
    };
    const lag = sum(samples, "kizo_projector_lag_commits");
    const mailbox = sum(samples, "kizo_engine_shard_mailbox_depth");
    const review = sum(samples, "kizo_settlements", (l) => l.status === "needs_review");
    let rate = "…"; let p99 = "…"; let flush = "…";
    if (previous) {
      const elapsed = (now - previous.at) / 1000;
      rate = `${Math.max(0, (current.transfers - previous.transfers) / elapsed).toFixed(1)}/s`;
      p99 = seconds(quantile(previous.latency, current.latency, 0.99));
      flush = seconds(quantile(previous.flush, current.flush, 0.99));
    }
    previous = current;
    fill(grid,
      figure("Transfers created", rate),
      figure("Transfer requests, p99", p99),
      figure("Log flush, p99", flush),
      figure("Projector lag", `${lag} commits`),
      figure("Shard mailboxes", `${mailbox} messages`),
      figure("Needs review", String(review)));
  };
  scrape();
  clearInterval(figuresTimer);
  figuresTimer = setInterval(scrape, 2000);
}

// ---- Settlements that need review -------------------------------------------------------

async function reviewList(box) {
  const answer = await admin("GET", "/v1/admin/settlements");
  if (!answer.ok) return fill(box, notice("error", problemText(answer.problem)));
  const list = answer.data.settlements;
  if (list.length === 0) return fill(box, notice("ok", "Nothing needs review."));
  fill(box,
    h("p", { class: "muted" }, "The bank did not say whether these moved money. Look each one up at the bank, then record what it says."),
    h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Settlement"), h("th", { scope: "col", class: "amount" }, "Amount"),
        h("th", { scope: "col", class: "wide" }, "Why"), h("th", { scope: "col" }, "Action"))),
      h("tbody", {}, list.map((s) => h("tr", {},
        h("td", {}, `${s.kind} `, h("code", {}, s.id.slice(0, 8)), h("div", { class: "muted" }, when(s.updated_at))),
        h("td", { class: "amount" }, formatMoney(s.amount, s.currency)),
        h("td", { class: "wide" }, s.reason || "unknown outcome"),
        h("td", {}, h("button", { type: "button", class: "secondary", onclick: () => resolveDialog(s, box) }, "Resolve…"))))))),
    answer.data.truncated ? h("p", { class: "muted" }, "More are waiting than are listed.") : null);
}

function resolveDialog(settlement, box) {
  const status = h("div");
  const form = h("form", { method: "dialog" },
    h("fieldset", {}, h("legend", {}, "What does the bank's own record say?"),
      h("label", { class: "choice" }, h("input", { type: "radio", name: "moved", value: "yes", required: true }), "The bank moved the money"),
      h("label", { class: "choice" }, h("input", { type: "radio", name: "moved", value: "no" }), "The bank did not move it")),
    status,
    h("div", { class: "actions" },
      h("button", { type: "submit", value: "confirm" }, "Record it"),
      h("button", { type: "button", class: "secondary", onclick: () => dialog.close() }, "Cancel")));
  const amount = formatMoney(settlement.amount, settlement.currency);
  const dialog = h("dialog", { "aria-labelledby": "resolve-title" },
    h("h2", { id: "resolve-title" }, `Resolve the ${settlement.kind} of ${amount}`),
    h("p", { class: "muted" }, `Settlement ${settlement.id}, user ${settlement.user_id}.`),
    form);
  form.addEventListener("submit", (event) => {
    event.preventDefault();
    const moved = new FormData(form).get("moved");
    if (!moved) return fill(status, notice("error", "Choose what the bank says."));
    busy(form, async () => {
      const answer = await admin("POST", `/v1/admin/settlements/${settlement.id}/resolve`, { bank_moved: moved === "yes" });
      if (!answer.ok) return fill(status, notice("error", problemText(answer.problem)));
      dialog.close();
      announce("Resolution recorded");
      await reviewList(box);
      box.prepend(notice("ok", `Recorded: the ${settlement.kind} of ${amount} is ${moved === "yes" ? "settled as moved" : "settled as not moved"}.`));
    });
  });
  dialog.addEventListener("close", () => dialog.remove());
  document.body.append(dialog);
  dialog.showModal();
}

// ---- Reconciliation ---------------------------------------------------------------------

async function reconciliationView(box) {
  const run = h("button", { type: "button" }, "Run now");
  const report = h("div");
  run.addEventListener("click", async () => {
    run.disabled = true;
    fill(report, h("p", { class: "muted" }, "Reconciling…"));
    const answer = await admin("POST", "/v1/admin/reconciliation");
    run.disabled = false;
    if (!answer.ok) return fill(report, notice("error", problemText(answer.problem)));
    announce("Reconciliation finished");
    showReport(report, answer.data);
  });
  fill(box, report, h("div", { class: "actions" }, run));
  const latest = await admin("GET", "/v1/admin/reconciliation/latest");
  if (latest.ok) showReport(report, latest.data);
  else if (latest.status === 404) fill(report, h("p", { class: "muted" }, "No reconciliation has run yet."));
  else fill(report, notice("error", problemText(latest.problem)));
}

function showReport(box, r) {
  const agrees = r.unexplained === 0;
  fill(box, agrees
    ? notice("ok", "The books agree with the bank.")
    : notice("error", `${r.unexplained} difference(s) nothing in progress explains: investigate.`),
  h("dl", { class: "facts card" },
    h("dt", {}, "Run at"), h("dd", {}, when(new Date(r.at_ms).toISOString())),
    h("dt", {}, "Settlements"), h("dd", {}, String(r.settlements)),
    h("dt", {}, "Bank movements"), h("dd", {}, String(r.movements)),
    h("dt", {}, "Matched"), h("dd", {}, String(r.matched)),
    h("dt", {}, "Missing in the ledger"), h("dd", {}, String(r.missing_in_ledger.length)),
    h("dt", {}, "Missing at the bank"), h("dd", {}, String(r.missing_at_bank.length)),
    h("dt", {}, "Amount mismatches"), h("dd", {}, String(r.amount_mismatches.length)),
    h("dt", {}, "Stuck"), h("dd", {}, String(r.stuck.length)),
    h("dt", {}, "Need review"), h("dd", {}, String(r.needs_review.length)),
    h("dt", {}, "Ledger checked"), h("dd", {}, r.ledger_checked ? "yes" : "no")));
}

// ---- Snapshots --------------------------------------------------------------------------

async function snapshotsView(box) {
  const take = h("button", { type: "button" }, "Take a snapshot");
  const status = h("div");
  const list = h("div");
  const refresh = async () => {
    const answer = await admin("GET", "/v1/admin/snapshots");
    if (!answer.ok) return fill(list, notice(answer.status === 404 ? "" : "error", problemText(answer.problem)));
    const rows = answer.data.snapshots;
    if (rows.length === 0) return fill(list, h("p", { class: "muted" }, "No snapshot yet."));
    fill(list, h("div", { class: "table-wrap" }, h("table", {},
      h("thead", {}, h("tr", {}, h("th", { scope: "col" }, "Taken"), h("th", { scope: "col" }, "LSN"),
        h("th", { scope: "col", class: "wide" }, "Accounts"), h("th", { scope: "col", class: "amount" }, "Size"))),
      h("tbody", {}, rows.map((s) => h("tr", {},
        h("td", {}, when(s.created_at)), h("td", {}, String(s.lsn)),
        h("td", { class: "wide" }, String(s.accounts)),
        h("td", { class: "amount" }, `${(s.bytes / 1024).toFixed(1)} KiB`)))))));
  };
  take.addEventListener("click", async () => {
    take.disabled = true;
    fill(status, h("p", { class: "muted" }, "Taking a snapshot…"));
    const answer = await admin("POST", "/v1/admin/snapshots");
    take.disabled = false;
    if (!answer.ok) return fill(status, notice("error", problemText(answer.problem)));
    fill(status, notice("ok", answer.data.written
      ? `Snapshot at LSN ${answer.data.snapshot.lsn} written in ${answer.data.duration_ms} ms.`
      : `Nothing new since the snapshot at LSN ${answer.data.snapshot.lsn}.`));
    announce("Snapshot taken");
    refresh();
  });
  fill(box, status, list, h("div", { class: "actions" }, take));
  refresh();
}

signInView(null);
