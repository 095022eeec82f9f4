// Browser test of a named action (boost): the homeowner picks a duration,
// starts it, sees it running with its end and the point it drives following
// it, then stops it and sees the previous value come back, without reloading
// in between.
//
//   BASE_URL, EMAIL, PASSWORD   the server and the homeowner
//   CONTROLS_PATH               e.g. /sites/<id>/controls
//   ACTION                      the action's name, e.g. boost_dhw
//   CONTROL_KEY                 the setpoint it drives, e.g. heatpump/dhw_setpoint
//   MINUTES                     the duration to choose (one of the offered ones)
// Optional: CHROMIUM, LOCALE (default fi-FI), RESULT_TIMEOUT_MS (default 30000), OUT_DIR.
//
// Checkpoint "running" ({"checkpoint":"running","action":{card},"point":{card}})
// once the page shows the boost running. Output: one JSON line,
// {"ok":true,"offered":["30","60"],"before":{...},"running":{...},"stopped":{...}}
// where each stage holds the action card and the driven point's card.

import { card, checkpoint, env, fail, markPage, run, stillSamePage, submit, waitForCard } from "./common.mjs";

run(async ({ page, login }) => {
  const controlsPath = env("CONTROLS_PATH");
  const action = env("ACTION");
  const key = env("CONTROL_KEY");
  const minutes = env("MINUTES");
  const actionKey = `action:${action}`;
  await login(env("EMAIL"), env("PASSWORD"), controlsPath);

  const before = { action: await card(page, actionKey), point: await card(page, key) };
  if (!before.action || before.action.kind !== "action") fail(`no action card for ${action}`, { before });
  if (before.point?.reported_value === null || before.point?.reported_value === undefined) {
    fail(`the card of ${key} shows no reported value`, { before });
  }
  const form = page.locator(`[data-control-key="${actionKey}"] form.action-form`);
  const offered = await form.locator('select[name="minutes"] option').evaluateAll((os) => os.map((o) => o.value));
  if (!offered.includes(minutes)) fail(`${minutes} min is not offered`, { offered });

  // 1. Choose the duration and start: a real form POST, redirected back.
  await form.locator('select[name="minutes"]').selectOption(minutes);
  const started = await submit(page, form.locator('button[name="op"][value="start"]'));
  if (started.path !== controlsPath || !started.search.includes("notice=sent")) {
    fail("starting did not come back to the Controls page with notice=sent", { landed: started });
  }
  await markPage(page);
  const runningAction = await waitForCard(
    page,
    actionKey,
    { running: "true", last_status: "applied", until_iso: true },
    "the action running with its end, and the start applied",
  );
  const runningPoint = await waitForCard(
    page,
    key,
    { source: "action", until_iso: runningAction.until_iso },
    "the driven point following the action until the same end",
  );
  const running = { action: runningAction, point: runningPoint };
  await checkpoint("running", running);

  // 2. Stop: the agent puts the value from before the boost back.
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the answer");
  const stopped = await submit(page, form.locator('button[name="op"][value="stop"]'));
  if (stopped.path !== controlsPath || !stopped.search.includes("notice=sent")) {
    fail("stopping did not come back with notice=sent", { landed: stopped });
  }
  await markPage(page);
  const stoppedAction = await waitForCard(
    page,
    actionKey,
    { running: "false", last_status: "applied", until_iso: false },
    "the action shown as not running, and the stop applied",
  );
  const stoppedPoint = await waitForCard(
    page,
    key,
    { reported_value: before.point.reported_value, until_iso: false },
    "the driven point back at its value from before the boost",
  );
  if (stoppedPoint.source === "action") fail("the point still says boost", { stoppedPoint });
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the answer");

  return { offered, before, running, stopped: { action: stoppedAction, point: stoppedPoint } };
});
