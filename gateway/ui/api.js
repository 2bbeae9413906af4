// The wallet's session and its calls to the API (same origin).
//
// The access token lives in this module's memory only; the refresh token is an HttpOnly,
// SameSite=Strict cookie that no script can read, sent only to /v1/auth. A reload or a new
// tab gets a new access token from the cookie. Refreshes are serialised across tabs (a Web
// Lock), because a refresh token is spent on use and a spent one presented again ends the
// session. Nothing is kept in localStorage; sessionStorage holds only the payment being sent
// (its Idempotency-Key and what it pays), so that a reload can finish it without paying twice.
//
// The shapes of what the API sends and takes are api-types.d.ts, generated from the OpenAPI
// document (a test keeps them in step): editors check the JSDoc types below against it.

/** @typedef {import('./api-types').components['schemas']} Schemas */
/** @typedef {Schemas['Problem']} Problem */

/** How long a call may take before the page stops waiting (a payment is then retried with
 * its same Idempotency-Key, so a slow answer never makes a second payment). */
const REQUEST_TIMEOUT_MS = 15_000;

let access = null; // { token, expiresAt }
let refreshTimer = null;
const listeners = new Set();

/** Called with `false` when the session ends (sign out, expiry, revocation). */
export function onSessionChange(listener) { listeners.add(listener); }

function setAccess(pair) {
  access = { token: pair.access_token, expiresAt: Date.now() + pair.expires_in * 1000 };
  clearTimeout(refreshTimer);
  // Silent refresh a minute before the token expires.
  refreshTimer = setTimeout(() => { refresh().catch(() => {}); }, Math.max(5, pair.expires_in - 60) * 1000);
}

function endSession() {
  const had = access !== null;
  access = null;
  clearTimeout(refreshTimer);
  if (had) listeners.forEach((l) => l(false));
}

export function signedIn() { return access !== null; }

async function post(path, body, headers = {}) {
  return fetch(path, {
    method: "POST",
    credentials: "same-origin",
    headers: { "content-type": "application/json", ...headers },
    body: JSON.stringify(body),
  });
}

async function refreshNow() {
  const response = await post("/v1/auth/refresh", {}, { "x-kizo-csrf": "1" });
  if (!response.ok) { endSession(); return false; }
  setAccess(await response.json());
  return true;
}

/** A new access token from the refresh cookie; false when there is no session. */
export async function refresh() {
  if (navigator.locks) return navigator.locks.request("kizo-refresh", refreshNow);
  return refreshNow();
}

/** Signs in; the refresh token is set as a cookie. Answers { ok } or { problem }. */
export async function signIn(email, password) {
  const response = await post("/v1/auth/login", { email, password, refresh_cookie: true });
  if (!response.ok) return { problem: await problemOf(response) };
  setAccess(await response.json());
  return { ok: true };
}

export async function signOut() {
  if (access) await call("POST", "/v1/auth/logout").catch(() => {});
  endSession();
  sessionStorage.clear();
}

/**
 * A call to the API with the access token: { ok, status, data, problem, headers }. A 401
 * refreshes the token once and tries again. Network failures answer { network: true }.
 */
export async function call(method, path, { body, file, idempotencyKey, accept } = {}) {
  for (let attempt = 0; attempt < 2; attempt++) {
    if (!access || access.expiresAt - Date.now() < 5000) {
      if (!(await refresh().catch(() => false))) return { status: 401, problem: { code: "signed_out", detail: "Sign in again." } };
    }
    const headers = { authorization: `Bearer ${access.token}` };
    if (body !== undefined) headers["content-type"] = "application/json";
    // A file goes as its own bytes, typed as the browser read it (the server checks them).
    if (file !== undefined) headers["content-type"] = file.type || "application/octet-stream";
    if (idempotencyKey) headers["idempotency-key"] = idempotencyKey;
    if (accept) headers.accept = accept;
    let response;
    try {
      response = await fetch(path, {
        method, headers, body: file !== undefined ? file : body === undefined ? undefined : JSON.stringify(body),
        signal: AbortSignal.timeout(REQUEST_TIMEOUT_MS),
      });
    } catch (error) {
      const timedOut = error && error.name === "TimeoutError";
      return { network: true, problem: { code: timedOut ? "timeout" : "network" } };
    }
    if (response.status === 401 && attempt === 0) {
      access = null;
      continue;
    }
    if (!response.ok) return { status: response.status, problem: await problemOf(response), headers: response.headers };
    if (accept === "text/csv") return { ok: true, status: response.status, data: await response.blob() };
    const data = response.status === 204 ? null : await response.json();
    return { ok: true, status: response.status, data, headers: response.headers };
  }
  endSession();
  return { status: 401, problem: { code: "signed_out", detail: "Sign in again." } };
}

/**
 * Listens to the wallet's live events (GET /v1/events, server-sent events read from a fetch,
 * which can carry the access token) until `signal` aborts or the session ends. Calls
 * `onEvent(kind, data)` for each; after a drop it reconnects with the last id it saw, so that
 * nothing is missed or seen twice. A `reset` means: reload what is shown.
 */
export async function listen(onEvent, signal) {
  let last = null;
  let pause = 1000;
  while (!signal.aborted) {
    if (!access || access.expiresAt - Date.now() < 5000) {
      if (!(await refresh().catch(() => false))) return;
    }
    try {
      const headers = { authorization: `Bearer ${access.token}`, accept: "text/event-stream" };
      if (last) headers["last-event-id"] = last;
      const response = await fetch("/v1/events", { headers, signal });
      if (response.status === 401) { access = null; continue; }
      if (!response.ok || !response.body) throw new Error(`events: ${response.status}`);
      pause = 1000;
      const reader = response.body.pipeThrough(new TextDecoderStream()).getReader();
      let buffer = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buffer += value;
        let end;
        while ((end = buffer.indexOf("\n\n")) >= 0) {
          const block = buffer.slice(0, end);
          buffer = buffer.slice(end + 2);
          let id = null; let kind = "message"; let data = "";
          for (const line of block.split("\n")) {
            if (line.startsWith("id:")) id = line.slice(3).trim();
            else if (line.startsWith("event:")) kind = line.slice(6).trim();
            else if (line.startsWith("data:")) data += line.slice(5).trim();
          }
          if (!data) continue; // a keep-alive comment
          last = kind === "reset" ? null : id || last;
          onEvent(kind, JSON.parse(data));
        }
      }
    } catch {
      if (signal.aborted) return;
    }
    await new Promise((resolve) => { setTimeout(resolve, pause); });
    pause = Math.min(pause * 2, 30_000);
  }
}

/** An anonymous POST (signup, email and password links): { ok, data } or { problem }. */
export async function anonymous(path, body) {
  let response;
  try {
    response = await post(path, body);
  } catch {
    return { problem: { code: "network", detail: "The server could not be reached." } };
  }
  if (!response.ok) return { status: response.status, problem: await problemOf(response) };
  const text = await response.text();
  return { ok: true, status: response.status, data: text ? JSON.parse(text) : null };
}

async function problemOf(response) {
  try {
    const problem = await response.json();
    return { ...problem, retryAfter: response.headers.get("retry-after") };
  } catch {
    return { code: "http_" + response.status, detail: response.statusText };
  }
}

const WORDS = {
  insufficient_funds: "Your available balance is too low for this.",
  same_account: "You cannot pay your own wallet.",
  unknown_recipient: "Nobody with a Kizo wallet has that email address (or they have not confirmed it yet).",
  currency_mismatch: "The recipient's wallet holds another currency.",
  account_closed: "That wallet is closed.",
  idempotency_key_reused: "This payment was already sent with different details. Start a new one.",
  transfer_failed: "This payment was refused before. Start a new one.",
  too_many_refusals: "Too many of your payments were refused today. Try again tomorrow.",
  too_many_settlements: "You have too many deposits and withdrawals under way. Wait for one to finish.",
  withdrawal_refused: "The withdrawal was refused.",
  invalid_credentials: "Wrong email or password.",
  email_taken: "An account with this email exists. Sign in instead.",
  invalid_token: "This link or code is unknown, used or expired. Ask for a new one.",
  rate_limited: "Too many attempts.",
  network: "The server could not be reached. Check your connection and try again.",
  timeout: "The server took too long to answer.",
  unavailable: "Kizo is busy or unavailable for a moment. Try again.",
  history_too_long: "This history is too long to sum here.",
  signed_out: "Your session ended. Sign in again.",
  not_an_image: "That file is not a PNG, JPEG or WebP picture.",
  image_too_large: "That picture is over 4096 pixels on a side.",
  unsupported_media_type: "Choose a PNG, JPEG or WebP picture.",
  body_too_large: "That file is over 2 MB.",
};

/** A refusal in words, for people.
 * @param {Problem} problem */
export function describe(problem) {
  if (!problem) return "Something went wrong.";
  let words = WORDS[problem.code] || problem.detail || problem.title || "Something went wrong.";
  if (problem.code === "invalid_field" && problem.detail) words = problem.detail;
  if (problem.retryAfter) words += ` Try again in ${problem.retryAfter} seconds.`;
  return words;
}
