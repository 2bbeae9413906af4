// The dashboard's time to first render in headless Chromium, against a running gateway
// (KIZO_URL, default http://127.0.0.1:8080): a signed-in user opens the app, cold (empty
// cache, a new browser context) and warm (a reload). Prints the median of each over
// KIZO_RUNS runs (default 15), and the bytes of JavaScript and CSS the cold load moved.
//
//   node gateway/tests/browser/first-render.mjs
import { chromium } from "playwright-core";

const BASE = process.env.KIZO_URL || "http://127.0.0.1:8080";
const RUNS = Number(process.env.KIZO_RUNS || 15);
const email = `render-${Date.now()}@example.com`;
const password = "correct horse battery";

await fetch(`${BASE}/v1/auth/signup`, {
  method: "POST",
  headers: { "content-type": "application/json" },
  body: JSON.stringify({ email, password, first_name: "Rena", last_name: "Example" }),
});
const browser = await chromium.launch({
  executablePath: process.env.KIZO_CHROMIUM || "/usr/bin/chromium",
  args: ["--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});

/** A signed-in browser context: the refresh cookie, as sign-in leaves it. */
async function signedIn() {
  const context = await browser.newContext({ baseURL: BASE });
  const page = await context.newPage();
  await page.goto("/signin");
  await page.getByLabel("Email").fill(email);
  await page.getByLabel("Password").fill(password);
  await page.getByRole("button", { name: "Sign in" }).click();
  await page.getByRole("heading", { name: /^Hello/ }).waitFor();
  return { context, state: await context.storageState() };
}

async function dashboard(page) {
  const started = performance.now();
  await page.goto("/");
  await page.getByRole("heading", { name: /^Hello/ }).waitFor();
  await page.locator("figure.chart").waitFor();
  return performance.now() - started;
}

const median = (values) => values.sort((a, b) => a - b)[Math.floor(values.length / 2)];
const { context: first, state } = await signedIn();
await first.close();
const cold = [];
const warm = [];
let bytes = 0;
for (let run = 0; run < RUNS; run++) {
  // A new context: nothing cached; the refresh cookie is the signed-in user's (each run
  // rotates it, so the next context takes the new one).
  const context = await browser.newContext({ baseURL: BASE, storageState: run === 0 ? state : await lastState() });
  const page = await context.newPage();
  cold.push(await dashboard(page));
  bytes = await page.evaluate(() => performance.getEntriesByType("resource")
    .filter((e) => /\.(js|css)$/.test(new URL(e.name).pathname))
    .reduce((sum, e) => sum + e.transferSize, 0));
  warm.push(await dashboard(page));
  lastState.value = await context.storageState();
  await context.close();
}
async function lastState() { return lastState.value; }
await browser.close();
console.log(JSON.stringify({
  runs: RUNS,
  cold_first_render_ms_median: Math.round(median(cold)),
  warm_first_render_ms_median: Math.round(median(warm)),
  cold_js_css_transferred_bytes: bytes,
}));
