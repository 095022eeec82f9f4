// Browser test: a logged-in user cannot see another tenant's site.
//
//   BASE_URL            e.g. http://127.0.0.1:43121
//   EMAIL, PASSWORD     a user of tenant A
//   FOREIGN_SITE_PATH   a site of tenant B, e.g. /sites/<id>
// Optional: FOREIGN_LIVE_PATH (default FOREIGN_SITE_PATH + "/live"), CHROMIUM.
//
// Checks that the page answers HTTP 404, that the browser opened no WebSocket
// while showing it, and that a WebSocket upgrade to the foreign live URL,
// sent with the user's session cookie and a same-origin Origin, is not
// accepted (anything but "101 Switching Protocols" passes).
//
// Output: one JSON line. Exit 0: {"ok":true,"status":404,"live_status":404}
// exit 1: {"ok":false,"reason":"..."}

import fs from "node:fs";
import http from "node:http";
import https from "node:https";
import os from "node:os";
import path from "node:path";
import crypto from "node:crypto";
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

let context = null;
let userDataDir = null;

async function finish(result, code) {
  if (context) await context.close().catch(() => {});
  if (userDataDir) fs.rmSync(userDataDir, { recursive: true, force: true });
  process.stdout.write(JSON.stringify(result) + "\n");
  process.exit(code);
}

const env = (name) => {
  const v = process.env[name];
  if (!v) finish({ ok: false, reason: `environment variable ${name} is not set` }, 1);
  return v;
};

// Sends a WebSocket upgrade request and resolves with the HTTP status the
// server answered (101 means the socket opened).
function tryUpgrade(url, cookieHeader, origin) {
  return new Promise((resolve, reject) => {
    const u = new URL(url);
    const lib = u.protocol === "https:" ? https : http;
    const req = lib.request({
      hostname: u.hostname,
      port: u.port,
      path: u.pathname + u.search,
      method: "GET",
      headers: {
        Connection: "Upgrade",
        Upgrade: "websocket",
        "Sec-WebSocket-Version": "13",
        "Sec-WebSocket-Key": crypto.randomBytes(16).toString("base64"),
        Origin: origin,
        Cookie: cookieHeader,
      },
      timeout: 10_000,
    });
    req.on("upgrade", (res, socket) => {
      socket.destroy();
      resolve(res.statusCode);
    });
    req.on("response", (res) => {
      res.resume();
      resolve(res.statusCode);
    });
    req.on("timeout", () => req.destroy(new Error("upgrade request timed out")));
    req.on("error", reject);
    req.end();
  });
}

async function main() {
  const base = env("BASE_URL").replace(/\/+$/, "");
  const email = env("EMAIL");
  const password = env("PASSWORD");
  const foreignPath = env("FOREIGN_SITE_PATH");
  const livePath = process.env.FOREIGN_LIVE_PATH || `${foreignPath.replace(/\/+$/, "")}/live`;

  userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), "hc-browser-"));
  context = await chromium.launchPersistentContext(userDataDir, {
    executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
    headless: true,
    args: CHROMIUM_ARGS,
  });
  const page = context.pages()[0] ?? (await context.newPage());
  page.setDefaultTimeout(15_000);

  await page.goto(`${base}/login`);
  await page.fill('input[name="email"]', email);
  await page.fill('input[name="password"]', password);
  await Promise.all([page.waitForNavigation({ waitUntil: "load" }), page.click('form[action="/login"] [type="submit"]')]);
  if (new URL(page.url()).pathname === "/login") {
    return finish({ ok: false, reason: "login failed", url: page.url() }, 1);
  }

  // Any WebSocket the page opens while showing the foreign site is a leak if it delivers data.
  const sockets = [];
  // Only sockets to the foreign site count: the user's own dashboard (where the
  // login redirect lands) may still be connecting while we navigate away.
  page.on("websocket", (ws) => {
    if (!new URL(ws.url()).pathname.startsWith(foreignPath)) return;
    const entry = { url: ws.url(), frames: 0 };
    sockets.push(entry);
    ws.on("framereceived", () => {
      entry.frames += 1;
    });
  });

  const response = await page.goto(base + foreignPath);
  const status = response ? response.status() : null;
  if (status !== 404) {
    return finish({ ok: false, reason: `foreign site page answered HTTP ${status}, expected 404`, url: page.url() }, 1);
  }
  const liveOnPage = await page.$("[data-live-url]");
  await page.waitForTimeout(1_000); // give a (wrongly) rendered dashboard time to connect
  if (liveOnPage || sockets.some((s) => s.frames > 0)) {
    return finish({ ok: false, reason: "the 404 page started a live connection", sockets }, 1);
  }

  const cookies = await context.cookies(base);
  const cookieHeader = cookies.map((c) => `${c.name}=${c.value}`).join("; ");
  if (!cookieHeader) return finish({ ok: false, reason: "no session cookie after login" }, 1);
  const wsBase = base.replace(/^http/, "ws");
  let liveStatus;
  try {
    liveStatus = await tryUpgrade(base + livePath, cookieHeader, base);
  } catch (e) {
    // A refused or reset connection also means no socket opened.
    liveStatus = `error: ${e.message}`;
  }
  if (liveStatus === 101) {
    return finish({ ok: false, reason: `WebSocket to ${wsBase}${livePath} opened for a foreign site` }, 1);
  }
  return finish({ ok: true, status, live_status: liveStatus, live_url: wsBase + livePath }, 0);
}

main().catch((e) => finish({ ok: false, reason: `unexpected error: ${e && e.message ? e.message : e}` }, 1));
