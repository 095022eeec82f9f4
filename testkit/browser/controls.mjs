// Browser test of remote control: the homeowner raises a room setpoint by one
// step on the Controls page and sees the site's answer arrive live.
//
// Run by the Rust test suite against a seeded server on a random port, with a
// fake agent (or the real one) that applies commands and reports the value
// it reads back:
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
// Output: exactly one JSON line on stdout (common.mjs).
//   success, exit 0: {"ok":true,"before":21,"requested":21.1,"reported":21.1,"status":"applied",...}
//   failure, exit 1: {"ok":false,"reason":"...",...}

import { env, fail, markPage, parseShown, resultTimeout, run, stillSamePage, submit } from "./common.mjs";

run(async ({ page, login }) => {
  const email = env("EMAIL");
  const password = env("PASSWORD");
  const controlsPath = env("CONTROLS_PATH");
  const key = env("CONTROL_KEY");
  env("OUT_DIR");
  const timeout = resultTimeout();
  const minEvents = Number(process.env.MIN_EVENTS ?? 1);
  const inCard = (sel) => page.locator(`[data-control-key="${key}"] ${sel}`);

  // 1. Log in through the real form, landing on the Controls page.
  await login(email, password, controlsPath);

  // 2. The setpoint card shows what the device reports.
  const card = page.locator(`[data-control-key="${key}"]`);
  if ((await card.count()) !== 1) fail(`no card for ${key}`);
  const before = parseShown(await card.locator(".reported").textContent());
  if (before === null) fail("the card shows no reported value");

  // 3. Press "+" (one 0.1 °C step up): a real form POST and redirect.
  const plusForm = card.locator("form.nudge-plus");
  const requested = Number(await plusForm.locator('input[name="value"]').getAttribute("value"));
  const landed = await submit(page, plusForm.locator('button[type="submit"]'));
  if (landed.path !== controlsPath || new URLSearchParams(landed.search).get("notice") !== "sent") {
    fail("the setpoint form did not come back with notice=sent", { url: page.url() });
  }
  const statusAfterPost = await inCard(".last-command").getAttribute("data-status");
  const notice = (await page.textContent(".flash-notice").catch(() => "")) || "";

  // 4. Without reloading, the command's result and the read-back value arrive.
  await markPage(page);
  try {
    await inCard('.last-command[data-status="applied"]').waitFor({ timeout });
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
    fail(`the result did not appear within ${timeout} ms`, {
      status: await inCard(".last-command").getAttribute("data-status"),
      reported: await card.locator(".reported").textContent(),
    });
  }
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the result");
  const events = Number(await page.getAttribute("#controls", "data-events")) || 0;
  if (events < minEvents) fail("no live control message was handled", { events });
  // The agent's note next to the why; the manual state's note arrives with the read-back.
  const noteEl = inCard(".why-note");
  return {
    before,
    requested,
    reported: parseShown(await inCard(".reported").textContent()),
    commanded: parseShown(await inCard(".commanded").textContent()),
    status: "applied",
    status_text: (await inCard(".last-status").textContent()).trim(),
    status_after_post: statusAfterPost,
    notice: notice.trim(),
    why: (await inCard(".why").textContent()).trim(),
    note: ((await noteEl.textContent()) || "").trim(),
    note_hidden: await noteEl.evaluate((el) => el.hidden),
    // The next "+" goes one step from the new value.
    next_plus: Number(await inCard('form.nudge-plus input[name="value"]').getAttribute("value")),
    events,
    resyncs: Number(await page.getAttribute("#controls", "data-resyncs")) || 0,
  };
});
