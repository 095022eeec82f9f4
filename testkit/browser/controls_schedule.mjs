// Browser test of the weekly clock-table editor: the homeowner opens an
// output's schedule from the Controls page, types a day's periods, copies
// them to the other days with the row's button, adds an exception day, and
// sends it; back on the Controls page the site's answer and the switching at
// the scheduled minute arrive live. Then the editor shows what was saved, and
// two malformed edits (a period ending before it starts, overlapping
// periods) are refused with a message, keeping what was typed.
//
//   BASE_URL, EMAIL, PASSWORD   the server and the homeowner
//   CONTROLS_PATH               e.g. /sites/<id>/controls
//   CONTROL_KEY                 the output, e.g. heatpump/car_heater
//   DAY                         the weekday row to type in, 0 = Monday
//   PERIODS                     what to type there, e.g. "06:00-07:00, 22:00-23:30"
//   EXCEPTION_DATE              YYYY-MM-DD of an "away" day with no periods
// Optional: CHROMIUM, LOCALE (default fi-FI), RESULT_TIMEOUT_MS (default 30000), OUT_DIR.
//
// Checkpoints: "saved" ({card, landed, notice}) once the Controls page is
// back after sending; "switched" ({card}) once the page shows the output on,
// following the schedule, with the command applied. Output: one JSON line,
// {"ok":true,"typed_days":[7 strings],"saved_days":[...],"saved_exceptions":[...],
//  "malformed":[{"typed","status","error","kept"}...],...}

import { card, checkpoint, env, fail, flashes, markPage, run, stillSamePage, submit, waitForCard } from "./common.mjs";

const MALFORMED = ["08:00-06:00", "06:00-08:00, 07:00-09:00"];

async function editorRows(page) {
  const days = await page.$$eval('.week input[name^="day"]', (els) => els.map((e) => e.value));
  const exceptions = await page.$$eval(".exception-row", (rows) =>
    rows
      .map((r) => ({
        date: r.querySelector('input[type="date"]').value,
        label: r.querySelector("select").value,
        periods: r.querySelector('input[name^="ex_periods_"]').value,
      }))
      .filter((e) => e.date),
  );
  return { days, exceptions };
}

run(async ({ page, login, base }) => {
  const controlsPath = env("CONTROLS_PATH");
  const key = env("CONTROL_KEY");
  const day = Number(env("DAY"));
  const periods = env("PERIODS");
  const exceptionDate = env("EXCEPTION_DATE");
  await login(env("EMAIL"), env("PASSWORD"), controlsPath);

  // 1. From the output's card to its editor.
  const link = page.locator(`[data-control-key="${key}"] a[href*="/schedule?"]`);
  if ((await link.count()) !== 1) fail(`the card of ${key} has no schedule link`, { card: await card(page, key) });
  const editorUrl = base + (await link.getAttribute("href"));
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), link.click()]);
  if (!(await page.$("form.schedule-form"))) fail("the schedule editor did not open", { url: page.url() });

  // 2. One day typed, copied to its kind of days; one exception day.
  const field = page.locator(`#day${day}`);
  await field.fill(periods);
  const copy = page.locator(`button[data-copy-from="day${day}"]`);
  if (!(await copy.isVisible())) fail(`day ${day} has no visible copy button`);
  const copyText = (await copy.textContent()).trim();
  await copy.click();
  const typedDays = (await editorRows(page)).days;
  await page.fill("#ex_date_0", exceptionDate);
  await page.selectOption("#ex_label_0", "away");
  await page.fill("#ex_periods_0", "");

  // 3. Send: back on the Controls page, the command waits for the site.
  const sent = await submit(page, page.locator('form.schedule-form button[type="submit"]'));
  if (sent.path !== controlsPath || !/notice=(sent|queued)/.test(sent.search)) {
    fail("sending the schedule did not come back to the Controls page with a notice", {
      landed: sent,
      flashes: await flashes(page),
    });
  }
  const notice = (await flashes(page)).notices[0] || "";
  await markPage(page);
  await checkpoint("saved", { card: await card(page, key), landed: sent, notice });

  // 4. The agent takes it and switches at the scheduled minute; the page
  // shows both without a reload.
  const switched = await waitForCard(
    page,
    key,
    { last_status: "applied", source: "schedule", state: "on", until_iso: false },
    "the schedule applied and the output switched on by it",
  );
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the site");
  await checkpoint("switched", { card: switched });

  // 5. The editor shows the saved schedule.
  await page.goto(editorUrl);
  const saved = await editorRows(page);

  // 6. Malformed edits: refused with a message, what was typed kept.
  const malformed = [];
  for (const typed of MALFORMED) {
    await field.fill(typed);
    const res = await submit(page, page.locator('form.schedule-form button[type="submit"]'));
    const shown = await flashes(page);
    const rows = await editorRows(page);
    malformed.push({
      typed,
      status: res.status,
      path: res.path,
      error: shown.errors[0] || null,
      kept: rows.days[day],
      exceptions_kept: rows.exceptions,
    });
    await page.goto(editorUrl);
  }
  const afterMalformed = await editorRows(page);

  return {
    copy_text: copyText,
    typed_days: typedDays,
    notice,
    switched,
    saved_days: saved.days,
    saved_exceptions: saved.exceptions,
    malformed,
    days_after_malformed: afterMalformed.days,
  };
});
