// Live dashboard: keeps gauges and lamps of one site up to date over a WebSocket.
//
// Contract with the server (see server/src/views.rs and the live route):
//   root  #dashboard[data-live-url]  WebSocket path, e.g. "/sites/<id>/live"
//   gauge [data-point-id][data-min][data-max][data-decimals] .value .sr-value .dial-arc .dial-needle
//   lamp  [data-point-id][data-state=on|off|unknown]
//   messages (JSON text):
//     {"type":"snapshot","agent_online":true,"last_reading_at":"…Z","values":[{point_id,value,ts,quality}]}
//     {"type":"readings","values":[…]}
//     {"type":"agent_status","online":false}
// The root's data-updates counts received "readings" messages (the browser test reads it).
// No inline script is allowed by the CSP, so every input arrives through data-* attributes.

const STALE_AFTER_MS = 60_000;
const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 15_000;
const HALF_SWEEP_DEG = 120; // must match views.rs
const DASH = "—";

const root = document.getElementById("dashboard");
if (root) start(root);

function start(root) {
  const text = (key) => root.dataset[key] || "";
  const lang = root.dataset.lang || "en";
  const connLamp = root.querySelector('[data-lamp="conn"]');
  const dataLamp = root.querySelector('[data-lamp="data"]');
  const lastReadingEl = root.querySelector(".last-reading");
  const connText = root.querySelector(".conn-text");

  /** point_id -> {kind: "gauge"|"lamp", el} */
  const points = new Map();
  for (const el of root.querySelectorAll(".gauge[data-point-id]")) {
    points.set(el.dataset.pointId, { kind: "gauge", el });
  }
  for (const el of root.querySelectorAll(".lamp[data-point-id]")) {
    points.set(el.dataset.pointId, { kind: "lamp", el });
  }

  const state = {
    agentOnline: root.dataset.agentOnline !== "false",
    socketUp: false,
    firstAttemptDone: false,
    lastReadingAt: parseTime(root.dataset.lastReadingAt),
    // Client-clock time of the last fresh data; staleness never depends on the
    // tablet's clock agreeing with the server's.
    freshAt: 0,
    updates: 0,
  };
  if (state.lastReadingAt && Date.now() - state.lastReadingAt.getTime() < STALE_AFTER_MS) {
    state.freshAt = Date.now();
  }

  // --- rendering -----------------------------------------------------------

  function formatNumber(value, decimals) {
    let s = value.toFixed(decimals);
    if (/^-0(\.0*)?$/.test(s)) s = s.slice(1); // "-0.0" reads like an error
    return lang === "fi" ? s.replace(".", ",") : s;
  }

  function setGauge(el, value, quality) {
    const valueEl = el.querySelector(".value");
    const srEl = el.querySelector(".sr-value"); // the dial SVG is hidden from screen readers
    const known = quality !== "comm_error" && typeof value === "number" && Number.isFinite(value);
    el.classList.toggle("is-error", quality === "comm_error");
    el.classList.toggle("is-stale", quality === "stale");
    el.classList.toggle("is-unknown", !known);
    if (!known) {
      valueEl.textContent = DASH;
      if (srEl) srEl.textContent = DASH;
      el.dataset.value = "";
      return;
    }
    const min = Number(el.dataset.min);
    const max = Number(el.dataset.max);
    const decimals = Math.min(Math.max(Number(el.dataset.decimals) || 0, 0), 6);
    const fraction = max > min ? Math.min(Math.max((value - min) / (max - min), 0), 1) : 0;
    const shown = formatNumber(value, decimals);
    // Only write when the text changes, so assistive tech is not flooded.
    if (valueEl.textContent !== shown) valueEl.textContent = shown;
    if (srEl && srEl.textContent !== shown) srEl.textContent = shown;
    el.dataset.value = String(value);
    // SVG presentation attributes, not style attributes: allowed by the CSP.
    el.querySelector(".dial-arc")?.setAttribute("stroke-dasharray", `${(fraction * 100).toFixed(2)} 100`);
    el.querySelector(".dial-needle")?.setAttribute(
      "transform",
      `rotate(${(-HALF_SWEEP_DEG + 2 * HALF_SWEEP_DEG * fraction).toFixed(2)} 100 100)`,
    );
  }

  function setLamp(el, on) {
    const s = on === true ? "on" : on === false ? "off" : "unknown";
    el.dataset.state = s;
    const sr = el.querySelector(".lamp-state");
    if (sr) sr.textContent = text(s === "on" ? "textOn" : s === "off" ? "textOff" : "textUnknown");
  }

  function applyValues(values) {
    let newest = null;
    for (const v of Array.isArray(values) ? values : []) {
      if (!v || typeof v.point_id !== "string") continue;
      const ts = parseTime(v.ts);
      if (ts && (!newest || ts > newest)) newest = ts;
      const point = points.get(v.point_id);
      if (!point) continue; // unknown point ids are ignored
      if (point.kind === "gauge") {
        setGauge(point.el, v.value, v.quality);
      } else {
        const known = v.quality !== "comm_error" && typeof v.value === "number";
        setLamp(point.el, known ? v.value >= 0.5 : null);
        point.el.classList.toggle("is-stale", v.quality === "stale");
      }
    }
    return newest;
  }

  function showLastReading() {
    if (!lastReadingEl) return;
    if (!state.lastReadingAt) {
      lastReadingEl.textContent = DASH;
      lastReadingEl.removeAttribute("datetime");
      return;
    }
    lastReadingEl.textContent = formatLocalTime(state.lastReadingAt, new Date());
    lastReadingEl.setAttribute("datetime", state.lastReadingAt.toISOString());
  }

  function showConnection() {
    const lost = !state.agentOnline || (state.firstAttemptDone && !state.socketUp);
    const stale = !lost && state.socketUp && Date.now() - state.freshAt > STALE_AFTER_MS;
    if (connLamp) setLamp(connLamp, lost);
    root.classList.toggle("is-offline", lost);
    root.classList.toggle("is-stale", lost || stale);
    let msg;
    if (!state.socketUp) msg = state.firstAttemptDone ? text("textConnBrowser") : text("textConnConnecting");
    else if (!state.agentOnline) msg = text("textConnAgent");
    else if (stale) msg = text("textStale");
    else msg = text("textConnOk");
    // Only touch the live region when the sentence changes, so it stays quiet.
    if (connText && connText.textContent !== msg) connText.textContent = msg;
  }

  function blinkData() {
    if (!dataLamp) return;
    dataLamp.dataset.state = "on";
    dataLamp.classList.remove("blink");
    void dataLamp.offsetWidth; // restart the CSS animation
    dataLamp.classList.add("blink");
    clearTimeout(blinkData.timer);
    blinkData.timer = setTimeout(() => {
      dataLamp.dataset.state = "off";
      dataLamp.classList.remove("blink");
    }, 600);
  }

  // --- messages ------------------------------------------------------------

  function onMessage(msg) {
    switch (msg && msg.type) {
      case "snapshot": {
        if (typeof msg.agent_online === "boolean") state.agentOnline = msg.agent_online;
        const newest = applyValues(msg.values);
        const last = parseTime(msg.last_reading_at) || newest;
        if (last) {
          state.lastReadingAt = last;
          if (Date.now() - last.getTime() < STALE_AFTER_MS) state.freshAt = Date.now();
        }
        break;
      }
      case "readings": {
        const newest = applyValues(msg.values);
        if (newest && (!state.lastReadingAt || newest > state.lastReadingAt)) state.lastReadingAt = newest;
        state.freshAt = Date.now();
        state.updates += 1;
        root.dataset.updates = String(state.updates);
        blinkData();
        break;
      }
      case "agent_status":
        if (typeof msg.online === "boolean") state.agentOnline = msg.online;
        break;
      default:
        return; // tolerate message types added later
    }
    showLastReading();
    showConnection();
  }

  // --- connection ----------------------------------------------------------

  const liveUrl = root.dataset.liveUrl;
  let backoff = BACKOFF_MIN_MS;
  let socket = null;

  function connect() {
    if (!liveUrl) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + liveUrl;
    try {
      socket = new WebSocket(url);
    } catch {
      scheduleReconnect();
      return;
    }
    socket.addEventListener("open", () => {
      state.socketUp = true;
      state.firstAttemptDone = true;
      backoff = BACKOFF_MIN_MS;
      showConnection();
    });
    socket.addEventListener("message", (ev) => {
      if (typeof ev.data !== "string") return;
      let msg;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      onMessage(msg);
    });
    socket.addEventListener("close", () => {
      socket = null;
      state.socketUp = false;
      // A refused first attempt is a lost connection too, not an endless "connecting".
      state.firstAttemptDone = true;
      showConnection();
      scheduleReconnect();
    });
    // "error" is always followed by "close"; nothing to do here.
  }

  function scheduleReconnect() {
    // Jitter spreads reconnects when a server restart drops every tablet at once.
    const delay = backoff * (0.8 + Math.random() * 0.4);
    backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
    setTimeout(connect, delay);
  }

  showLastReading();
  showConnection();
  connect();
  // Re-evaluate staleness and the "today" date rule without any message arriving.
  setInterval(() => {
    showLastReading();
    showConnection();
  }, 5_000);
}

function parseTime(s) {
  if (typeof s !== "string" || s === "") return null;
  const d = new Date(s);
  return Number.isNaN(d.getTime()) ? null : d;
}

// fi-FI style: "12.00.01" today, "21.11.2026 12.00.01" on other days (local time).
function formatLocalTime(d, now) {
  const p = (n) => String(n).padStart(2, "0");
  const time = `${p(d.getHours())}.${p(d.getMinutes())}.${p(d.getSeconds())}`;
  const sameDay =
    d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
  return sameDay ? time : `${d.getDate()}.${d.getMonth() + 1}.${d.getFullYear()} ${time}`;
}
