// Browser test of an output: the homeowner switches it on from the Controls
// page, sees the device's answer (on, manual, until when), then sends it back
// to its schedule and sees the device follow, without reloading in between.
//
//   BASE_URL, EMAIL, PASSWORD   the server and the homeowner
//   CONTROLS_PATH               e.g. /sites/<id>/controls
//   CONTROL_KEY                 the output, e.g. heatpump/car_heater
// Optional: CHROMIUM, LOCALE (default fi-FI), RESULT_TIMEOUT_MS (default 30000),
//   OUT_DIR (a screenshot of the last page is saved there).
//
// Checkpoint "on" ({"checkpoint":"on","card":{...}}) once the page shows the
// output on. Output: one JSON line, {"ok":true,"before":{card},"on":{card},"released":{card},...}
// where a card is what common.mjs `card` reads: data-state, data-source, the
// shown values, the "why" line with its end time, and the last command.

import { card, checkpoint, env, fail, markPage, run, stillSamePage, submit, waitForCard } from "./common.mjs";

run(async ({ page, login }) => {
  const controlsPath = env("CONTROLS_PATH");
  const key = env("CONTROL_KEY");
  await login(env("EMAIL"), env("PASSWORD"), controlsPath);

  const before = await card(page, key);
  if (!before || before.kind !== "output") fail(`no output card for ${key}`, { before });
  const form = page.locator(`[data-control-key="${key}"] form.output-form`);

  // 1. "On": a real form POST, redirected back to the page.
  const on = await submit(page, form.locator('button[name="state"][value="on"]'));
  if (on.path !== controlsPath || !on.search.includes("notice=sent")) {
    fail("switching on did not come back to the Controls page with notice=sent", { landed: on });
  }
  const onNotice = (await page.textContent(".flash-notice").catch(() => "")) || "";
  await markPage(page);
  const onCard = await waitForCard(
    page,
    key,
    { state: "on", source: "manual", last_status: "applied", until_iso: true },
    "the output on, manual, with an end time, and the command applied",
  );
  await checkpoint("on", { card: onCard });

  // 2. The release button ("back to schedule", or "release manual control"
  // without one): the agent drops the override.
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the answer");
  const auto = await submit(page, form.locator('button[name="state"][value="auto"]'));
  if (auto.path !== controlsPath || !auto.search.includes("notice=sent")) {
    fail("back to schedule did not come back with notice=sent", { landed: auto });
  }
  await markPage(page);
  const released = await waitForCard(
    page,
    key,
    { state: "off", last_status: "applied", until_iso: false },
    "the output back off, with no end time, and the release applied",
  );
  if (released.source === "manual") fail("the released output still says manual", { released });
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the answer");

  return { before, on: onCard, on_notice: onNotice.trim(), released };
});
