// Browser test of a read-only account (a wall tablet): the Controls page
// shows the values, live, but no form, button or schedule link; a form forged
// in the page (as with the browser's developer tools, with the page's own
// CSRF token) and the schedule editor's address are refused.
//
//   BASE_URL, EMAIL, PASSWORD   the server and the viewer
//   CONTROLS_PATH               e.g. /sites/<id>/controls
//   CONTROL_KEYS                the cards to read, comma-separated, e.g.
//                               heatpump/dhw_setpoint,heatpump/car_heater,action:boost_dhw
//   WATCH_KEY                   a setpoint whose reported value changes at the device
//   FORGE_KEY                   an output to try to switch on
// Optional: CHROMIUM, LOCALE (default fi-FI), RESULT_TIMEOUT_MS (default 30000), OUT_DIR.
//
// Checkpoint "looked" ({cards, page, flashes}) after reading the page; the
// test then changes WATCH_KEY at the device, and the script waits for the
// card's reported value to differ from the one it saw. Output: one JSON line,
// {"ok":true,"cards":{key:{card}},"page":{...},"changed":{card},"forged":{...},"schedule_status":403}

import { card, checkpoint, env, fail, flashes, markPage, run, stillSamePage, submit } from "./common.mjs";

run(async ({ page, login, base }) => {
  const controlsPath = env("CONTROLS_PATH");
  const keys = env("CONTROL_KEYS").split(",");
  const watchKey = env("WATCH_KEY");
  const forgeKey = env("FORGE_KEY");
  await login(env("EMAIL"), env("PASSWORD"), controlsPath);

  // 1. Values, but nothing to press.
  const cards = {};
  for (const key of keys) {
    const c = await card(page, key);
    if (!c) fail(`no card for ${key}`);
    cards[key] = c;
  }
  const whole = await page.evaluate(() => ({
    forms: [...document.querySelectorAll("#controls form")].map((f) => f.getAttribute("action")),
    enabled_buttons: [...document.querySelectorAll("#controls button")].filter((b) => !b.disabled).length,
    inputs: document.querySelectorAll("#controls input, #controls select").length,
    schedule_links: document.querySelectorAll('a[href*="/schedule"]').length,
    nav: [...document.querySelectorAll(".site-nav a")].map((a) => a.textContent.trim()),
  }));
  const shown = await flashes(page);
  await markPage(page);
  await checkpoint("looked", { cards, page: whole, flashes: shown });

  // 2. A value changed at the device arrives without a reload.
  const before = cards[watchKey].reported;
  const deadline = Date.now() + Number(process.env.RESULT_TIMEOUT_MS || 30_000);
  let changed = null;
  for (;;) {
    changed = await card(page, watchKey).catch(() => null);
    if (changed && changed.reported !== before && changed.reported_value !== null) break;
    if (Date.now() > deadline) fail("the changed value did not appear", { before, seen: changed });
    await page.waitForTimeout(100);
  }
  if (!(await stillSamePage(page))) fail("the page reloaded while waiting for the value");

  // 3. A forged form, with the page's own CSRF token.
  const token = await page.getAttribute('input[name="csrf_token"]', "value");
  await page.evaluate(
    ([action, token, key]) => {
      const f = document.createElement("form");
      f.method = "post";
      f.action = action;
      f.id = "forged";
      for (const [name, value] of [["csrf_token", token], ["control", key], ["state", "on"]]) {
        const i = document.createElement("input");
        i.type = "hidden";
        i.name = name;
        i.value = value;
        f.append(i);
      }
      const b = document.createElement("button");
      b.type = "submit";
      f.append(b);
      document.body.append(f);
    },
    [`${controlsPath}/output`, token, forgeKey],
  );
  const forged = await submit(page, page.locator("#forged button"));
  const forgedFlashes = await flashes(page);
  const afterForge = await card(page, forgeKey);

  // 4. The schedule editor's address.
  const schedule = await page.goto(`${base}${controlsPath.replace(/\/controls$/, "")}/schedule?control=${encodeURIComponent(forgeKey)}`);

  return {
    cards,
    page: whole,
    flashes: shown,
    changed,
    forged: { ...forged, flashes: forgedFlashes, card: afterForge },
    schedule_status: schedule ? schedule.status() : null,
  };
});
