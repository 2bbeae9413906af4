// The web app's journeys in headless Chromium against a real gateway (started by
// gateway/tests/browser.rs, which passes where it is):
//
//   KIZO_URL          the gateway people use (its built-in bank approves every deposit)
//   KIZO_REVIEW_URL   a gateway whose bank never answers: its deposits end in needs_review
//   KIZO_MAIL_DIR     the first gateway's development mail (.eml files)
//   KIZO_ADMIN_KEY    both gateways' admin API key
//   KIZO_SHOTS        where screenshots go
//   KIZO_CHROMIUM     the browser (default /usr/bin/chromium)
//
// Every page is checked with axe-core (no serious or critical violation), and
// photographed. Prints one JSON line of measurements at the end.
import { chromium } from "playwright-core";
import { readFileSync, readdirSync, mkdirSync } from "node:fs";
import { join } from "node:path";
import { createRequire } from "node:module";
import assert from "node:assert/strict";

const BASE = process.env.KIZO_URL;
const REVIEW = process.env.KIZO_REVIEW_URL;
const MAIL = process.env.KIZO_MAIL_DIR;
const ADMIN_KEY = process.env.KIZO_ADMIN_KEY;
const SHOTS = process.env.KIZO_SHOTS;
const PASSWORD = "correct horse battery";
const AXE = readFileSync(createRequire(import.meta.url).resolve("axe-core/axe.min.js"), "utf8");
const run = Math.random().toString(36).slice(2, 8);
const measured = {};
const cspViolations = [];

mkdirSync(SHOTS, { recursive: true });

const browser = await chromium.launch({
  executablePath: process.env.KIZO_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

const pages = [];

async function newPage(viewport = { width: 1200, height: 900 }) {
  const context = await browser.newContext({ baseURL: BASE, viewport, acceptDownloads: true });
  const page = await context.newPage();
  pages.push(page);
  page.setDefaultTimeout(15_000);
  page.on("console", (message) => {
    // Redoc's credit line asks its CDN for a logo: the policy blocks it, as it should
    // (nothing is loaded from elsewhere), and Redoc hides the image.
    if (/cdn\.redoc\.ly/.test(message.text())) return;
    if (/Content Security Policy/i.test(message.text())) cspViolations.push(message.text());
  });
  page.on("pageerror", (error) => { throw new Error(`a script error on ${page.url()}: ${error.message}`); });
  return page;
}

/** axe-core on the page as it is: no serious or critical violation; then a screenshot. */
async function check(page, name, { fullPage = true } = {}) {
  await page.evaluate(AXE);
  const result = await page.evaluate(() => globalThis.axe.run(document, { resultTypes: ["violations"] }));
  const bad = result.violations.filter((v) => v.impact === "serious" || v.impact === "critical");
  assert.deepEqual(bad.map((v) => `${v.id}: ${v.help} (${v.nodes.map((n) => n.target.join(" ")).join(", ")})`), [], `accessibility of ${name}`);
  await page.screenshot({ path: join(SHOTS, `${name}.png`), fullPage });
}

/** The code in the newest mail to `email` whose subject contains `subject`. */
function mailCode(email, subject) {
  for (let tries = 0; tries < 100; tries++) {
    const files = readdirSync(MAIL).filter((f) => f.endsWith(".eml")).sort().reverse();
    for (const file of files) {
      // Quoted-printable: soft line breaks and escaped "=".
      const text = readFileSync(join(MAIL, file), "utf8").replace(/=\r?\n/g, "").replace(/=3D/g, "=");
      if (!text.includes(`To: ${email}`) || !text.includes(subject)) continue;
      const code = /enter this code:\s+([0-9a-f]{64})/.exec(text);
      const link = /(\/(?:verify-email|reset-password)\?token=[0-9a-f]{64})/.exec(text);
      if (code && link) return { code: code[1], path: link[1] };
    }
    Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
  }
  throw new Error(`no mail "${subject}" to ${email}`);
}

async function signUp(page, first, email) {
  await page.goto("/signup");
  await page.getByLabel("First name").fill(first);
  await page.getByLabel("Last name").fill("Example");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(PASSWORD);
  if (first === "Ana") await check(page, "signup");
  await page.getByRole("button", { name: "Create my account" }).click();
  await page.getByRole("heading", { name: "Confirm your email" }).waitFor();
  if (first === "Ana") await check(page, "verify-email");
  await page.getByLabel("Code").fill(mailCode(email, "Confirm your email").code);
  await page.getByRole("button", { name: "Confirm my email" }).click();
  await page.locator("main").getByText("Your email is confirmed").waitFor();
}

async function signIn(page, email, password = PASSWORD) {
  await page.goto("/signin");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: /^Hello/ }).waitFor();
}

/** The wallet's own answers, through the API, for checks the page cannot be trusted with. */
async function history(email, password = PASSWORD) {
  const login = await fetch(`${BASE}/v1/auth/login`, {
    method: "POST", headers: { "content-type": "application/json" }, body: JSON.stringify({ email, password }),
  }).then((r) => r.json());
  const auth = { authorization: `Bearer ${login.access_token}` };
  const me = await fetch(`${BASE}/v1/me`, { headers: auth }).then((r) => r.json());
  const page = await fetch(`${BASE}/v1/accounts/${me.accounts[0].id}/transfers?limit=200`, { headers: auth }).then((r) => r.json());
  return { account: me.accounts[0], transfers: page.transfers };
}

async function deposit(page, amount) {
  await page.goto("/deposit");
  await page.getByLabel(/Amount/).fill(amount);
  await page.getByRole("button", { name: "Add from my bank" }).click();
  await page.locator("main").getByText("Done: the money is in your wallet.").waitFor();
}

// On a failure: a screenshot of every page still open, then the error.
process.on("uncaughtException", async (error) => {
  console.error(error);
  for (const [i, page] of pages.entries()) {
    await page.screenshot({ path: join(SHOTS, `failure-${i}.png`), fullPage: true }).catch(() => {});
  }
  process.exit(1);
});

const ana = `ana-${run}@example.com`;
const bob = `bob-${run}@example.com`;

// ---- The landing page: read with no script at all, then the way in -----------------------
{
  const context = await browser.newContext({ baseURL: BASE, javaScriptEnabled: false });
  const bare = await context.newPage();
  await bare.goto("/");
  await bare.getByRole("heading", { name: "Money that always adds up" }).waitFor();
  await bare.getByRole("heading", { name: "What makes it safe" }).waitFor();
  assert.equal(await bare.locator("script").count(), 0);
  await bare.screenshot({ path: join(SHOTS, "landing-no-script.png"), fullPage: true });
  await context.close();
  const visitor = await newPage();
  await visitor.goto("/");
  await check(visitor, "landing");
  await visitor.getByRole("link", { name: "Create your wallet" }).click();
  await visitor.getByRole("heading", { name: "Create your Kizo account" }).waitFor();
  const phone = await newPage({ width: 390, height: 844 });
  await phone.goto("/");
  await check(phone, "landing-phone");
}

// ---- Sign up, verify, sign in -----------------------------------------------------------
const anaPage = await newPage();
await signUp(anaPage, "Ana", ana);
await anaPage.getByRole("navigation").getByRole("button", { name: "Sign out" }).click();
await anaPage.getByRole("heading", { name: "Sign in" }).waitFor();
await check(anaPage, "signin");
// Signed out, `/` is the landing page again; signed in, it is the dashboard.
await anaPage.goto("/");
await anaPage.getByRole("heading", { name: "Money that always adds up" }).waitFor();
await signIn(anaPage, ana);
await anaPage.goto("/");
await anaPage.getByRole("heading", { name: /^Hello/ }).waitFor();

// The refresh token is an HttpOnly, SameSite=Strict cookie; nothing is in localStorage.
const cookies = await anaPage.context().cookies();
const refresh = cookies.find((c) => c.name === "kizo_refresh");
assert.ok(refresh && refresh.httpOnly && refresh.sameSite === "Strict" && refresh.path === "/v1/auth", JSON.stringify(cookies));
assert.equal(await anaPage.evaluate(() => localStorage.length), 0);
assert.equal(await anaPage.evaluate(() => document.cookie), "", "no cookie a script can read");

// A reload keeps the session (a new access token from the cookie), and measures the first render.
const started = Date.now();
await anaPage.reload();
await anaPage.getByRole("heading", { name: /^Hello/ }).waitFor();
measured.dashboard_first_render_ms = Date.now() - started;
measured.first_load_transferred_bytes = await anaPage.evaluate(() => performance.getEntriesByType("resource")
  .filter((e) => /\.(js|css)$/.test(new URL(e.name).pathname))
  .reduce((sum, e) => sum + e.transferSize, 0));

// ---- Deposit, live until final ----------------------------------------------------------
await deposit(anaPage, "100.00");
await check(anaPage, "deposit");

// ---- Send to another user, who sees it arrive -------------------------------------------
const bobPage = await newPage();
await signUp(bobPage, "Bob", bob);
await bobPage.goto("/");
await bobPage.getByRole("heading", { name: /^Hello/ }).waitFor();

await anaPage.goto("/send");
await anaPage.getByLabel(/Recipient/).fill("Bob");
await anaPage.getByRole("button", { name: /^Bob Example/ }).click();
await anaPage.getByLabel(/Amount/).fill("12.50");
await anaPage.getByLabel(/Note/).fill("lunch");
await check(anaPage, "send");
await anaPage.getByRole("button", { name: "Review" }).click();
await anaPage.getByRole("heading", { name: "Confirm the payment" }).waitFor();
await check(anaPage, "send-confirm");
// A double click on Send pays once.
await anaPage.getByRole("button", { name: /^Send \$12\.50/ }).dblclick();
await anaPage.locator("main").getByText(/You sent \$12\.50 to Bob Example/).waitFor();
await check(anaPage, "send-done");

// No reload: Bob's dashboard hears of the payment (GET /v1/events) and draws itself again.
await bobPage.locator("main").getByText("+$12.50").first().waitFor({ timeout: 5000 });
await bobPage.locator("main").getByText("lunch").first().waitFor();
await bobPage.getByRole("link", { name: "Received from Ana Example" }).first().waitFor();
await check(bobPage, "dashboard-recipient");

// A retry after a timeout pays once: the first try reaches the server, its answer is lost,
// and the second try sends the same Idempotency-Key.
await anaPage.goto("/send");
await anaPage.getByLabel(/Recipient/).fill(bob);
await anaPage.getByRole("button", { name: /^Bob Example/ }).click();
await anaPage.getByLabel(/Amount/).fill("2.25");
await anaPage.getByRole("button", { name: "Review" }).click();
let lost = 0;
await anaPage.route("**/v1/transfers", async (route) => {
  if (lost++ === 0) {
    await route.fetch(); // the server takes it
    return route.abort("timedout"); // the page never hears
  }
  return route.continue();
});
await anaPage.getByRole("button", { name: /^Send \$2\.25/ }).click();
await anaPage.locator("main").getByText(/may or may not have gone through/).waitFor();
// A reload in the middle: the attempt (and its key) survives it.
await anaPage.reload();
await anaPage.locator("main").getByText(/was being sent when the page was reloaded/).waitFor();
await anaPage.getByRole("button", { name: /^Send \$2\.25/ }).click();
await anaPage.locator("main").getByText(/You sent \$2\.25/).waitFor();
await anaPage.unroute("**/v1/transfers");
{
  const { transfers } = await history(ana);
  const payments = transfers.filter((t) => t.kind === "payment");
  assert.equal(payments.filter((t) => t.amount === 1250).length, 1, "the double click paid once");
  assert.ok(payments.every((t) => t.from_name === "Ana Example" && t.to_name === "Bob Example"), JSON.stringify(payments));
  assert.equal(payments.filter((t) => t.amount === 225).length, 1, "the retry paid once");
}

// A refused payment shows why.
await anaPage.goto("/send");
await anaPage.getByLabel(/Recipient/).fill(bob);
await anaPage.getByRole("button", { name: /^Bob Example/ }).click();
await anaPage.getByLabel(/Amount/).fill("5000");
await anaPage.getByRole("button", { name: "Review" }).click();
await anaPage.getByRole("button", { name: /^Send \$5,000\.00/ }).click();
await anaPage.locator("main").getByText("Not sent: Your available balance is too low for this.").waitFor();
await check(anaPage, "send-refused");
// Bad input never reaches the server.
await anaPage.goto("/send");
await anaPage.getByLabel(/Amount/).fill("1.234");
await anaPage.getByLabel(/Recipient/).fill(bob);
await anaPage.getByRole("button", { name: "Review" }).click();
await anaPage.locator("main").getByText("At most 2 digits after the point.").waitFor();

// ---- Withdraw ---------------------------------------------------------------------------
await anaPage.goto("/withdraw");
await anaPage.getByLabel(/Amount/).fill("10");
await anaPage.getByRole("button", { name: "Withdraw to my bank" }).click();
await anaPage.locator("main").getByText("Done: the money is on its way to your bank.").waitFor();
await check(anaPage, "withdraw");

// ---- Dashboard: 100 - 12.50 - 2.25 - 10 = 75.25 -----------------------------------------
await anaPage.goto("/");
await anaPage.getByRole("heading", { name: /^Hello/ }).waitFor();
await anaPage.locator("main").getByText("$75.25").first().waitFor();
await anaPage.locator("figure.chart svg").waitFor();
await check(anaPage, "dashboard");

// ---- History, filters, detail and CSV ---------------------------------------------------
await anaPage.goto("/transactions");
await anaPage.getByRole("heading", { name: "Transactions" }).waitFor();
await anaPage.getByLabel("Direction").selectOption("received");
await anaPage.getByRole("button", { name: "Show" }).click();
await anaPage.waitForURL(/direction=received/);
await anaPage.locator("main").getByText("Added from your bank").waitFor();
assert.equal(await anaPage.locator("main").getByText(/^Sent to /).count(), 0);
await anaPage.getByLabel("Direction").selectOption("sent");
await anaPage.getByRole("button", { name: "Show" }).click();
await anaPage.waitForURL(/direction=sent/);
await anaPage.locator("main").getByText("lunch").waitFor();
await check(anaPage, "transactions");
const [download] = await Promise.all([
  anaPage.waitForEvent("download"),
  anaPage.getByRole("button", { name: "Download CSV" }).click(),
]);
const csv = readFileSync(await download.path(), "utf8");
assert.match(csv, /^id,created_at,direction,counterparty_account_id,amount,currency,status,note\n/);
assert.match(csv, /,sent,[0-9a-f-]{36},1250,USD,posted,lunch\n/);
assert.doesNotMatch(csv, /,received,/);
await anaPage.getByRole("link", { name: "Sent to Bob Example" }).first().click();
await anaPage.locator("main").getByText(/^Ana Example, /).waitFor();
await check(anaPage, "transaction");

// ---- Profile ----------------------------------------------------------------------------
await anaPage.goto("/profile");
await anaPage.getByLabel("First name").fill("Ana María");
await anaPage.getByRole("button", { name: "Save" }).click();
await anaPage.locator("main").getByText("Saved.").waitFor();
await check(anaPage, "profile");

// ---- A picture: uploaded, shown in the header, the profile and the recipient search -----
// A real photograph-like PNG, drawn and encoded by the browser itself.
const photo = Buffer.from(await anaPage.evaluate(() => {
  const canvas = document.createElement("canvas");
  canvas.width = 640; canvas.height = 480;
  const g = canvas.getContext("2d");
  const gradient = g.createLinearGradient(0, 0, 640, 480);
  gradient.addColorStop(0, "#0b5cad"); gradient.addColorStop(1, "#f2c14e");
  g.fillStyle = gradient; g.fillRect(0, 0, 640, 480);
  g.fillStyle = "#ffffff"; g.beginPath(); g.arc(320, 200, 110, 0, Math.PI * 2); g.fill();
  return canvas.toDataURL("image/png").split(",")[1];
}), "base64");
// A page pretending to be a picture is refused, and nothing changes.
await anaPage.getByLabel("Picture").setInputFiles({ name: "me.png", mimeType: "image/png",
  buffer: Buffer.from("<!doctype html><script>alert(document.cookie)</script>") });
await anaPage.getByRole("button", { name: "Upload" }).click();
await anaPage.locator("main").getByText("That file is not a PNG, JPEG or WebP picture.").waitFor();
await anaPage.getByLabel("Picture").setInputFiles({ name: "me.png", mimeType: "image/png", buffer: photo });
await anaPage.getByRole("button", { name: "Upload" }).click();
await anaPage.getByRole("img", { name: "Your picture" }).waitFor();
const avatarSrc = await anaPage.getByRole("img", { name: "Your picture" }).getAttribute("src");
assert.match(avatarSrc, /^\/v1\/avatars\/[0-9a-f]{64}$/);
// Served as a 160x160 picture, and shown in the header.
assert.equal(await anaPage.getByRole("img", { name: "Your picture" }).evaluate((img) => img.complete && img.naturalWidth), 160);
await anaPage.getByRole("navigation").locator(`img[src="${avatarSrc}"]`).waitFor();
await check(anaPage, "profile-picture");
await bobPage.goto("/send");
await bobPage.getByLabel(/Recipient/).fill("Ana");
await bobPage.getByRole("button", { name: /^Ana/ }).locator(`img[src="${avatarSrc}"]`).waitFor();
await check(bobPage, "send-search-avatar");

// ---- A phone-sized screen ---------------------------------------------------------------
const phone = await newPage({ width: 390, height: 844 });
await phone.clock.install();
await signIn(phone, ana);
// The silent refresh: a minute before the 15-minute access token expires, the page gets a
// new one (and a new refresh cookie) without a word to the user.
const cookieBefore = (await phone.context().cookies()).find((c) => c.name === "kizo_refresh").value;
const refreshed = phone.waitForResponse((r) => r.url().endsWith("/v1/auth/refresh") && r.status() === 200);
await phone.clock.fastForward("14:10");
await refreshed;
const cookieAfter = (await phone.context().cookies()).find((c) => c.name === "kizo_refresh").value;
assert.notEqual(cookieAfter, cookieBefore, "the refresh cookie was rotated");
assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "no sideways scrolling");
await check(phone, "dashboard-phone");
await phone.goto("/transactions");
await phone.getByRole("heading", { name: "Transactions" }).waitFor();
assert.ok(await phone.evaluate(() => document.documentElement.scrollWidth <= window.innerWidth), "no sideways scrolling");
await phone.context().close();

// ---- Forgot and reset the password, then sign out ---------------------------------------
await anaPage.getByRole("navigation").getByRole("button", { name: "Sign out" }).click();
await anaPage.getByRole("heading", { name: "Sign in" }).waitFor();
await anaPage.getByRole("link", { name: "Forgot your password?" }).click();
await anaPage.getByLabel("Email").fill(ana);
await check(anaPage, "forgot-password");
await anaPage.getByRole("button", { name: "Send me a link" }).click();
await anaPage.locator("main").getByText(/a link to choose a new password is on its way/).waitFor();
const reset = mailCode(ana, "Reset your Kizo password");
await anaPage.goto(reset.path);
await anaPage.getByLabel("New password", { exact: true }).fill("a brand new password");
await anaPage.getByLabel("New password, again").fill("a brand new password");
await check(anaPage, "reset-password");
await anaPage.getByRole("button", { name: "Change my password" }).click();
await anaPage.locator("main").getByText("Your password is changed").waitFor();
await signIn(anaPage, ana, "a brand new password");
await anaPage.getByRole("navigation").getByRole("button", { name: "Sign out" }).click();
await anaPage.getByRole("heading", { name: "Sign in" }).waitFor();
await anaPage.goto("/");
await anaPage.getByRole("heading", { name: "Money that always adds up" }).waitFor();
await anaPage.goto("/signin");
// The old password no longer works.
await anaPage.getByLabel("Email").fill(ana);
await anaPage.getByLabel("Password").fill(PASSWORD);
await anaPage.getByRole("button", { name: "Sign in" }).click();
await anaPage.locator("main").getByText("Wrong email or password.").waitFor();

// ---- The operator resolves a settlement that needs review --------------------------------
{
  const operator = await newPage();
  const waiting = await needsReview();
  await operator.goto(`${REVIEW}/console`);
  await check(operator, "console-signin");
  await operator.getByLabel(/Admin API key/).fill(ADMIN_KEY);
  await operator.getByRole("button", { name: "Open the console" }).click();
  await operator.getByRole("heading", { name: "Settlements that need review" }).waitFor();
  await operator.locator("main").getByText("Log flush, p99").waitFor();
  const row = operator.getByRole("row").filter({ hasText: waiting.slice(0, 8) });
  await row.getByRole("button", { name: "Resolve…" }).click();
  await operator.getByRole("dialog").waitFor();
  await check(operator, "console-resolve");
  await operator.getByLabel("The bank moved the money").check();
  await operator.getByRole("button", { name: "Record it" }).click();
  await operator.locator("main").getByText(/Recorded: the deposit of \$3\.00 is settled as moved/).waitFor();
  await operator.locator("main").getByText("Nothing needs review.").waitFor();
  // Reconciliation and snapshots on the gateway whose bank answers.
  await operator.goto(`${BASE}/console`);
  await operator.getByLabel(/Admin API key/).fill(ADMIN_KEY);
  await operator.getByRole("button", { name: "Open the console" }).click();
  await operator.getByRole("button", { name: "Run now" }).click();
  await operator.locator("main").getByText(/The books agree with the bank|difference\(s\) nothing in progress explains/).waitFor();
  await operator.getByRole("button", { name: "Take a snapshot" }).click();
  await operator.locator("main").getByText(/Snapshot at LSN \d+ written|Nothing new since the snapshot/).waitFor();
  await operator.locator("main").getByText(/^\d+(\.\d)?\/s$/).first().waitFor();
  await check(operator, "console");
  await operator.context().close();
}

// ---- The API's documentation -------------------------------------------------------------
{
  const docs = await newPage();
  await docs.goto("/docs");
  await docs.getByRole("heading", { name: /^Kizo/ }).first().waitFor();
  await docs.locator("h2", { hasText: /^wallet$/ }).waitFor({ timeout: 30_000 });
  await check(docs, "docs", { fullPage: false });
  await docs.context().close();
}

assert.deepEqual(cspViolations, [], "no Content-Security-Policy violation");
await browser.close();
console.log(JSON.stringify({ journeys: "passed", ...measured }));

/** A deposit on the review gateway that ends in needs_review (its bank never answers). */
async function needsReview() {
  const email = `carol-${run}@example.com`;
  const post = (path, body, headers = {}) => fetch(`${REVIEW}${path}`, {
    method: "POST", headers: { "content-type": "application/json", ...headers }, body: JSON.stringify(body),
  });
  await post("/v1/auth/signup", { email, password: PASSWORD, first_name: "Carol", last_name: "Example" });
  const { access_token: token } = await post("/v1/auth/login", { email, password: PASSWORD }).then((r) => r.json());
  const auth = { authorization: `Bearer ${token}` };
  const me = await fetch(`${REVIEW}/v1/me`, { headers: auth }).then((r) => r.json());
  const started = await post("/v1/deposits", { account_id: me.accounts[0].id, amount: 300 }, { ...auth, "idempotency-key": `review-${run}` }).then((r) => r.json());
  for (let tries = 0; tries < 300; tries++) {
    const now = await fetch(`${REVIEW}/v1/deposits/${started.id}`, { headers: auth }).then((r) => r.json());
    if (now.status === "needs_review") return started.id;
    await new Promise((resolve) => setTimeout(resolve, 100));
  }
  throw new Error("the deposit never needed review");
}
