// Browser smoke test: log in, open a site dashboard and see live values change
// over the WebSocket without reloading the page.
//
// Run by the Rust test suite against a seeded server on a random port:
//   BASE_URL   e.g. http://127.0.0.1:43121 (no trailing slash needed)
//   EMAIL, PASSWORD   a user who may see the site
//   SITE_PATH  e.g. /sites/<id>
//   OUT_DIR    where live_dashboard.png is written (created if missing)
// Optional: CHROMIUM (default /usr/bin/chromium), CHANGE_TIMEOUT_MS (default 30000).
//
// Output: exactly one JSON line on stdout.
//   success, exit 0: {"ok":true,"first":21.4,"changed_to":21.5,"updates":3,...}
//   failure, exit 1: {"ok":false,"reason":"...",...}

import fs from "node:fs";
import os from "node:os";
import path from "node:path";
import { chromium } from "playwright-core";

const CHROMIUM_ARGS = [
  "--no-sandbox",
  "--disable-gpu",
  "--disable-quic",
  "--no-first-run",
  "--disable-background-networking",
  "--disable-component-update",
  "--disable-sync",
];

const env = (name) => {
  const v = process.env[name];
  if (!v) finish({ ok: false, reason: `environment variable ${name} is not set` }, 1);
  return v;
};

let context = null;
let userDataDir = null;

async function finish(result, code) {
  if (context) await context.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

// A gauge number as rendered by dashboard.js: "21,4" (fi) or "-7.4" (en); "—" is no value.
function parseShown(text) {
  const t = (text || "").trim().replace("\u2212", "-").replace(",", ".");
  return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : null;
}

async function readGauges(page) {
  return page.$$eval("[data-point-id] .value", (els) =>
    els.map((el) => ({ point_id: el.closest("[data-point-id]").dataset.pointId, text: el.textContent })),
  );
}

async function main() {
  const base = env("BASE_URL").replace(/\/+$/, "");
  const email = env("EMAIL");
  const password = env("PASSWORD");
  const sitePath = env("SITE_PATH");
  const outDir = env("OUT_DIR");
  const changeTimeout = Number(process.env.CHANGE_TIMEOUT_MS || 30_000);

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hc-browser-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 800 },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });

  // 1. Log in through the real form.
  await page.goto(`${base}/login?next=${encodeURIComponent(sitePath)}`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  // The form POST answers with a redirect (success) or a re-rendered form (failure).
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click('form[action="/login"] [type="submit"]')]);
  if (new URL(page.url()).pathname === "/login") {
    const shown = await page.textContent(".flash-error").catch(() => null);
    return finish({ ok: false, reason: "login failed", page_error: shown, url: page.url() }, 1);
  }

  // 2. Open the dashboard.
  const response = await page.goto(base + sitePath);
  if (!response || response.status() !== 200) {
    return finish({ ok: false, reason: `dashboard returned HTTP ${response?.status()}`, url: page.url() }, 1);
  }
  if (!(await page.$("#dashboard[data-live-url]"))) {
    return finish({ ok: false, reason: "no #dashboard[data-live-url] on the page", url: page.url() }, 1);
  }
  // Marker that disappears if the page reloads: the change must come over the socket.
  await page.evaluate(() => {
    window.__hcNoReload = true;
  });
  let navigations = 0;
  page.on("framenavigated", (f) => {
    if (f === page.mainFrame()) navigations += 1;
  });

  // 3. Wait for a number in some gauge and record all gauges.
  try {
    await page.waitForFunction(
      () =>
        [...document.querySelectorAll("[data-point-id] .value")].some((el) =>
          /^-?\d+([.,]\d+)?$/.test(el.textContent.trim().replace("\u2212", "-")),
        ),
      null,
      { timeout: changeTimeout },
    );
  } catch {
    return finish({ ok: false, reason: "no gauge showed a number", gauges: await readGauges(page), errors: pageErrors }, 1);
  }
  const before = await readGauges(page);
  const firstGauge = before.find((g) => parseShown(g.text) !== null);
  const updatesBefore = Number(await page.getAttribute("#dashboard", "data-updates")) || 0;

  // 4. Wait until some gauge shows a different text, without a reload.
  try {
    await page.waitForFunction(
      (prev) => {
        if (!window.__hcNoReload) return false;
        const now = [...document.querySelectorAll("[data-point-id] .value")];
        return now.some((el) => {
          const id = el.closest("[data-point-id]").dataset.pointId;
          const old = prev.find((p) => p.point_id === id);
          const text = el.textContent.trim();
          return old && old.text !== el.textContent && /^-?\d+([.,]\d+)?$/.test(text.replace("\u2212", "-"));
        });
      },
      before,
      { timeout: changeTimeout, polling: 100 },
    );
  } catch {
    return finish(
      { ok: false, reason: `no gauge value changed within ${changeTimeout} ms`, first: parseShown(firstGauge.text), updates: updatesBefore, errors: pageErrors },
      1,
    );
  }
  // The first change may come in a fresh snapshot (a server replica that
  // resynchronises its viewers after it starts listening to its peers); a
  // live "readings" message must follow on the same page all the same.
  try {
    await page.waitForFunction(
      (prev) => (Number(document.querySelector("#dashboard").dataset.updates) || 0) > prev,
      updatesBefore,
      { timeout: changeTimeout, polling: 100 },
    );
  } catch {
    // Reported below with the counts.
  }
  const after = await readGauges(page);
  const changed = after.find((g) => before.find((b) => b.point_id === g.point_id)?.text !== g.text);
  const updates = Number(await page.getAttribute("#dashboard", "data-updates")) || 0;
  const stillSamePage = await page.evaluate(() => window.__hcNoReload === true);

  fs.mkdirSync(outDir, { recursive: true });
  const screenshot = path.join(outDir, "live_dashboard.png");
  await page.screenshot({ path: screenshot });

  if (!stillSamePage || navigations > 0) {
    return finish({ ok: false, reason: "the page reloaded or navigated while waiting for a change", navigations }, 1);
  }
  if (!(updates > updatesBefore)) {
    return finish({ ok: false, reason: `data-updates did not increase (${updatesBefore} -> ${updates})` }, 1);
  }
  return finish(
    {
      ok: true,
      first: parseShown(firstGauge.text),
      first_point_id: firstGauge.point_id,
      changed_to: parseShown(changed?.text),
      changed_point_id: changed?.point_id,
      changed_from: parseShown(before.find((b) => b.point_id === changed?.point_id)?.text),
      updates,
      screenshot,
      console_errors: pageErrors,
    },
    0,
  );
}

main().catch((e) => finish({ ok: false, reason: `unexpected error: ${e && e.message ? e.message : e}` }, 1));
