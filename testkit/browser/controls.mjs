// Browser test of remote control: the homeowner raises a room setpoint by one
// step on the Controls page and sees the site's answer arrive live.
//
// Run by the Rust test suite against a seeded server on a random port, with a
// fake agent that applies commands and reports the value it reads back:
//   BASE_URL       e.g. http://127.0.0.1:43121
//   EMAIL, PASSWORD  the homeowner
//   CONTROLS_PATH  e.g. /sites/<id>/controls
//   CONTROL_KEY    e.g. pop1/room3_floor_setpoint
//   OUT_DIR        where controls.png is written
// Optional: CHROMIUM (default /usr/bin/chromium), RESULT_TIMEOUT_MS (default 30000),
//   MIN_EVENTS (default 1: live control messages the page must have handled;
//   0 for a real agent, whose answer may land before the live feed opens and
//   then reaches the page by its resync on the feed's snapshot).
//
// Output: exactly one JSON line on stdout.
//   success, exit 0: {"ok":true,"before":21,"requested":21.1,"reported":21.1,"status":"applied",...}
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

// "21,1" (fi) or "21.1" (en); "—" is no value.
function parseShown(text) {
  const t = (text || "").trim().replace("\u2212", "-").replace(",", ".");
  return /^-?\d+(\.\d+)?$/.test(t) ? Number(t) : null;
}

async function main() {
  const base = env("BASE_URL").replace(/\/+$/, "");
  const email = env("EMAIL");
  const password = env("PASSWORD");
  const controlsPath = env("CONTROLS_PATH");
  const key = env("CONTROL_KEY");
  const outDir = env("OUT_DIR");
  const timeout = Number(process.env.RESULT_TIMEOUT_MS || 30_000);
  const minEvents = Number(process.env.MIN_EVENTS ?? 1);

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hc-browser-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
    viewport: { width: 1280, height: 900 },
    locale: "fi-FI",
    extraHTTPHeaders: { "Accept-Language": "fi" },
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);
  const pageErrors = [];
  page.on("pageerror", (e) => pageErrors.push(e.message));
  page.on("console", (m) => {
    if (m.type() === "error") pageErrors.push(m.text());
  });

  // 1. Log in through the real form, landing on the Controls page.
  await page.goto(`${base}/login?next=${encodeURIComponent(controlsPath)}`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click('form[action="/login"] [type="submit"]')]);
  if (new URL(page.url()).pathname !== controlsPath) {
    return finish({ ok: false, reason: "login did not lead to the Controls page", url: page.url() }, 1);
  }

  // 2. The setpoint card shows what the device reports.
  const card = page.locator(`[data-control-key="${key}"]`);
  if ((await card.count()) !== 1) {
    return finish({ ok: false, reason: `no card for ${key}`, errors: pageErrors }, 1);
  }
  const before = parseShown(await card.locator(".reported").textContent());
  if (before === null) {
    return finish({ ok: false, reason: "the card shows no reported value", errors: pageErrors }, 1);
  }

  // 3. Press "+" (one 0.1 °C step up): a real form POST and redirect.
  const plusForm = card.locator("form.nudge-plus");
  const requested = Number(await plusForm.locator('input[name="value"]').getAttribute("value"));
  await Promise.all([
    page.waitForNavigation({ waitUntil: "load" }),
    plusForm.locator('button[type="submit"]').click(),
  ]);
  const landed = new URL(page.url());
  if (landed.pathname !== controlsPath || landed.searchParams.get("notice") !== "sent") {
    return finish({ ok: false, reason: "the setpoint form did not come back with notice=sent", url: page.url() }, 1);
  }
  const statusAfterPost = await page.locator(`[data-control-key="${key}"] .last-command`).getAttribute("data-status");
  const notice = (await page.textContent(".flash-notice").catch(() => "")) || "";

  // 4. Without reloading, the command's result and the read-back value arrive.
  await page.evaluate(() => {
    window.__hcNoReload = true;
  });
  try {
    await page.locator(`[data-control-key="${key}"] .last-command[data-status="applied"]`).waitFor({ timeout });
    await page.waitForFunction(
      ([k, want]) => {
        const el = document.querySelector(`[data-control-key="${k}"] .reported`);
        const t = (el && el.textContent.trim().replace(",", ".")) || "";
        return Number(t) === want;
      },
      [key, requested],
      { timeout, polling: 100 },
    );
  } catch {
    return finish(
      {
        ok: false,
        reason: `the result did not appear within ${timeout} ms`,
        status: await page.locator(`[data-control-key="${key}"] .last-command`).getAttribute("data-status"),
        reported: await card.locator(".reported").textContent(),
        errors: pageErrors,
      },
      1,
    );
  }
  const stillSamePage = await page.evaluate(() => window.__hcNoReload === true);
  const events = Number(await page.getAttribute("#controls", "data-events")) || 0;
  const statusText = (await page.locator(`[data-control-key="${key}"] .last-status`).textContent()).trim();
  const reported = parseShown(await page.locator(`[data-control-key="${key}"] .reported`).textContent());
  const commanded = parseShown(await page.locator(`[data-control-key="${key}"] .commanded`).textContent());
  const why = (await page.locator(`[data-control-key="${key}"] .why`).textContent()).trim();
  // The agent's note next to the why; the manual state's note arrives with the read-back.
  const noteEl = page.locator(`[data-control-key="${key}"] .why-note`);
  const note = ((await noteEl.textContent()) || "").trim();
  const noteHidden = await noteEl.evaluate((el) => el.hidden);
  // The next "+" goes one step from the new value.
  const nextPlus = Number(
    await page.locator(`[data-control-key="${key}"] form.nudge-plus input[name="value"]`).getAttribute("value"),
  );

  fs.mkdirSync(outDir, { recursive: true });
  const screenshot = path.join(outDir, "controls.png");
  await page.screenshot({ path: screenshot, fullPage: true });

  if (!stillSamePage) return finish({ ok: false, reason: "the page reloaded while waiting for the result" }, 1);
  if (events < minEvents) return finish({ ok: false, reason: "no live control message was handled", events }, 1);
  return finish(
    {
      ok: true,
      before,
      requested,
      reported,
      commanded,
      status: "applied",
      status_text: statusText,
      status_after_post: statusAfterPost,
      notice: notice.trim(),
      why,
      note,
      note_hidden: noteHidden,
      next_plus: nextPlus,
      events,
      resyncs: Number(await page.getAttribute("#controls", "data-resyncs")) || 0,
      screenshot,
      console_errors: pageErrors,
    },
    0,
  );
}

main().catch((e) => finish({ ok: false, reason: `unexpected error: ${e && e.message ? e.message : e}` }, 1));
