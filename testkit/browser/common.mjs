// Shared by the Controls-page scripts (controls_*.mjs): one Chromium launch,
// login through the real form, reading a control card the way a person sees
// it, waiting for a card to reach a state without reloading, and the one-line
// JSON report every script ends with.
//
// A script is `run(async (b) => { ...; return { ...report } })`: whatever it
// returns is printed as {"ok":true,...} (exit 0); `fail(reason, details)`
// anywhere, or any exception, prints {"ok":false,"reason":...} (exit 1).
// The browser is closed and its profile removed either way.
//
// `checkpoint(name, data)` prints {"checkpoint":name,...data} and, when
// CHECKPOINTS=1 (the Rust side, testkit::browser::Script, sets it), waits for
// a line on stdin: the test looks at the device and the store while the page
// shows the state, then lets the script go on. Run by hand without
// CHECKPOINTS, a script does not stop.

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import readline from "node:readline";
import { chromium } from "playwright-core";

export const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

/** A failed expectation: becomes {"ok":false,"reason":...,...details}. */
export class Failure extends Error {
  constructor(reason, details = {}) {
    super(reason);
    this.details = details;
  }
}

/** Stop the script with a failure report. */
export function fail(reason, details = {}) {
  throw new Failure(reason, details);
}

/** A required environment variable. */
export function env(name) {
  const v = process.env[name];
  if (!v) fail(`environment variable ${name} is not set`);
  return v;
}

let stdinLines = null;

/** Report `data` at checkpoint `name` and wait for the test to say go on. */
export async function checkpoint(name, data = {}) {
  process.stdout.write(JSON.stringify({ checkpoint: name, ...data }) + "\n");
  if (process.env.CHECKPOINTS !== "1") return;
  if (!stdinLines) stdinLines = readline.createInterface({ input: process.stdin })[Symbol.asyncIterator]();
  const next = await stdinLines.next();
  if (next.done) fail(`the test closed the script's input at checkpoint ${name}`);
}

/** How long to wait for the site's answer (RESULT_TIMEOUT_MS, default 30 000). */
export function resultTimeout() {
  return Number(process.env.RESULT_TIMEOUT_MS || 30_000);
}

// "21,1" (fi) or "21.1" (en); "—" is no value.
export function parseShown(text) {
  const t = (text || "").trim().replace("\u2212", "-").replace(",", ".");
  return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : null;
}

/**
 * Launch Chromium (Finnish unless LOCALE says otherwise), run `main` with
 * { page, errors, base, login }, print the report and exit.
 */
export async function run(main) {
  let context = null;
  let userDataDir = null;
  let page = null;
  const errors = [];
  let result;
  let code = 0;
  try {
    const base = env("BASE_URL").replace(/\/+$/, "");
    const locale = process.env.LOCALE || "fi-FI";
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hc-browser-"));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
      headless: true,
      args: CHROMIUM_ARGS,
      viewport: { width: 1280, height: 900 },
      locale,
      extraHTTPHeaders: { "Accept-Language": locale.slice(0, 2) },
    });
    page = context.pages()[0] ?? (await context.newPage());
    page.setDefaultTimeout(15_000);
    page.on("pageerror", (e) => errors.push(e.message));
    page.on("console", (m) => {
      // A refused form answers 4xx on purpose; Chromium logs that as a
      // console error, which is not the page's fault.
      if (m.type() === "error" && !/status of 4\d\d/.test(m.text())) errors.push(m.text());
    });
    const b = {
      page,
      errors,
      base,
      login: (email, password, landing) => login(page, base, email, password, landing),
    };
    result = { ok: true, ...(await main(b)), console_errors: errors };
  } catch (e) {
    code = 1;
    result =
      e instanceof Failure
        ? { ok: false, reason: e.message, ...e.details, console_errors: errors }
        : { ok: false, reason: `unexpected error: ${e && e.message ? e.message : e}`, console_errors: errors };
  }
  const outDir = process.env.OUT_DIR;
  if (outDir && page) {
    fs.mkdirSync(outDir, { recursive: true });
    const shot = path.join(outDir, `${path.basename(process.argv[1] || "script", ".mjs")}.png`);
    await page.screenshot({ path: shot, fullPage: true }).catch(() => {});
    result.screenshot = shot;
  }
  if (context) await context.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify(result) + "\n", () => process.exit(code));
}

/** Log in through the real form and land on `landing` (a path). */
async function login(page, base, email, password, landing) {
  await page.goto(`${base}/login?next=${encodeURIComponent(landing)}`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click('form[action="/login"] [type="submit"]')]);
  if (new URL(page.url()).pathname !== landing) {
    const shown = await page.textContent(".flash-error").catch(() => null);
    fail(`login did not lead to ${landing}`, { url: page.url(), page_error: shown });
  }
}

/**
 * Click `locator` (a submit button) and wait for the page it leads to.
 * Returns { status, path, search } of the landing page.
 */
export async function submit(page, locator) {
  const [response] = await Promise.all([page.waitForNavigation({ waitUntil: "load" }), locator.click()]);
  const url = new URL(page.url());
  return { status: response ? response.status() : null, path: url.pathname, search: url.search };
}

/** Text of the page's flash messages. */
export async function flashes(page) {
  const texts = (sel) => page.$$eval(sel, (els) => els.map((e) => e.textContent.trim()));
  return { errors: await texts(".flash-error"), notices: await texts(".flash-notice") };
}

// Runs in the page: a card as a person sees it.
function cardInPage(key) {
  const c = document.querySelector(`[data-control-key="${CSS.escape(key)}"]`);
  if (!c) return null;
  const text = (sel) => {
    const e = c.querySelector(sel);
    return e ? e.textContent.replace(/\s+/g, " ").trim() : null;
  };
  const until = c.querySelector(".until");
  const last = c.querySelector(".last-command");
  return {
    kind: c.dataset.kind || null,
    source: c.dataset.source || null,
    state: c.dataset.state || null,
    running: c.dataset.running || null,
    commanded: text(".commanded"),
    reported: text(".reported"),
    why: text(".why"),
    until_iso: (until && until.getAttribute("datetime")) || null,
    until_text: until ? until.textContent.trim() : "",
    last_status: last && !last.hidden ? last.dataset.status || null : null,
    last_status_text: text(".last-status"),
    last_reason: text(".last-reason"),
    forms: c.querySelectorAll("form").length,
    enabled_buttons: [...c.querySelectorAll("button")].filter((b) => !b.disabled).length,
    // The form buttons as a person (and a screen reader) meets them, by
    // their value (or text): {"on": {"text":"Päälle","pressed":"true","disabled":false}, ...}
    buttons: Object.fromEntries(
      [...c.querySelectorAll("form button")].map((b) => [
        b.value || b.textContent.trim(),
        { text: b.textContent.trim(), pressed: b.getAttribute("aria-pressed"), disabled: b.disabled },
      ]),
    ),
    links: [...c.querySelectorAll("a[href]")].map((a) => a.getAttribute("href")),
  };
}

/** The card of control `key` now (null if the page has none). */
export async function card(page, key) {
  const c = await page.evaluate(cardInPage, key);
  if (c) {
    c.commanded_value = parseShown(c.commanded);
    c.reported_value = parseShown(c.reported);
  }
  return c;
}

/**
 * Wait, without reloading, until card `key` matches every field of `want`
 * (compared with ===; `until_iso: true`/`false` means set/unset). Fails with
 * the last seen card after RESULT_TIMEOUT_MS. The page may re-render cards
 * (its resync) meanwhile, so the card is looked up afresh each time.
 */
export async function waitForCard(page, key, want, what) {
  const deadline = Date.now() + resultTimeout();
  let seen = null;
  for (;;) {
    seen = await card(page, key).catch(() => null);
    if (seen && matches(seen, want)) return seen;
    if (Date.now() > deadline) fail(`${what}: not seen within ${resultTimeout()} ms`, { want, seen });
    await page.waitForTimeout(100);
  }
}

function matches(c, want) {
  return Object.entries(want).every(([k, v]) => {
    if (k === "until_iso" && typeof v === "boolean") return Boolean(c.until_iso) === v;
    return c[k] === v;
  });
}

/** Mark the page so a reload is detectable; `stillSamePage` checks the mark. */
export async function markPage(page) {
  await page.evaluate(() => {
    window.__hcNoReload = true;
  });
}

/** Whether the page marked by `markPage` is still the same document. */
export async function stillSamePage(page) {
  return page.evaluate(() => window.__hcNoReload === true);
}
