// Controls page: keeps each control card current from the site's live feed,
// so a person sees the device's answer to their command without reloading.
//
// Contract with the server (server/src/views/controls.rs, services/control.rs):
//   root  #controls[data-live-url][data-lang][data-text-*]
//   card  [data-control-key][data-kind=setpoint|output|action][data-decimals]
//         .commanded .reported .why .until .why-note .last-command (.last-status .last-reason .last-meta)
//   action cards also [data-action][data-running=true|false][data-drives=dev/pt while running]
//         and the start/stop buttons of form.action-form (button[name=op][value=start|stop])
//   output cards also [data-state=on|off|unknown][data-has-schedule=true|false] and the
//         buttons of form.output-form (button[name=state][value=on|off|auto])
//   messages (JSON text), besides the dashboard's snapshot/readings/agent_status:
//     {"type":"control_state","control":"dev/pt","commanded":21.5,"reported":21.4,
//      "source":"manual","until":"…Z","action":null,"note":"…"|null}
//     {"type":"command","control":"dev/pt","command_id":"…","status":"applied",
//      "reason":null,"reason_text":{"en":"…","fi":"…"}|null,"before":21.0,"after":21.5,"at":"…Z"}
//   (reason_text is the reason as the page shows it, in each page language)
// The root's data-events counts handled control messages (the browser test reads it).
// The CSP allows no inline script, so every input arrives through data-* attributes.

const BACKOFF_MIN_MS = 1_000;
const BACKOFF_MAX_MS = 15_000;
const DASH = "—";

const root = document.getElementById("controls");
if (root) start(root);

function start(root) {
  const lang = root.dataset.lang || "en";
  const text = (key) => root.dataset["text" + key.replace(/(^|-)([a-z])/g, (_, __, c) => c.toUpperCase())] || "";
  let events = 0;

  const cards = new Map();
  for (const el of root.querySelectorAll("[data-control-key]")) cards.set(el.dataset.controlKey, el);

  const p = (n) => String(n).padStart(2, "0");
  function localTime(iso) {
    const d = new Date(iso || "");
    if (Number.isNaN(d.getTime())) return "";
    const now = new Date();
    const time = `${p(d.getHours())}.${p(d.getMinutes())}`;
    const sameDay =
      d.getFullYear() === now.getFullYear() && d.getMonth() === now.getMonth() && d.getDate() === now.getDate();
    return sameDay ? time : `${d.getDate()}.${d.getMonth() + 1}.${d.getFullYear()} ${time}`;
  }

  function shown(card, value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return DASH;
    if (card.dataset.kind === "output") return value >= 0.5 ? text("state-on") : text("state-off");
    const decimals = Math.min(Math.max(Number(card.dataset.decimals) || 0, 0), 6);
    let s = value.toFixed(decimals);
    if (/^-0(\.0*)?$/.test(s)) s = s.slice(1);
    return lang === "fi" ? s.replace(".", ",") : s;
  }

  function setText(el, value) {
    if (el && el.textContent !== value) el.textContent = value;
  }

  function setUntil(card, iso) {
    const el = card.querySelector(".until");
    if (!el) return;
    if (iso) {
      el.setAttribute("datetime", iso);
      setText(el, localTime(iso));
    } else {
      el.removeAttribute("datetime");
      setText(el, "");
    }
  }

  function setWhy(card, source, until) {
    card.dataset.source = source;
    const why = card.querySelector(".why");
    if (!why) return;
    const phrase = text("why-" + (["schedule", "manual", "action", "device", "clamped"].includes(source) ? source : "none"));
    // The phrase is the text node before the <time>.
    const first = why.firstChild;
    if (first && first.nodeType === Node.TEXT_NODE) first.nodeValue = phrase + " ";
    else why.insertBefore(document.createTextNode(phrase + " "), why.firstChild);
    setUntil(card, until);
  }

  // The one-step forms and the number input follow the new value, so the
  // next "+" goes one step from what is commanded now, not from the value
  // the page was rendered with.
  function followValue(card, value) {
    if (typeof value !== "number" || !Number.isFinite(value)) return;
    const step = Number(card.dataset.step) || 0;
    const decimals = Math.min(Math.max(Number(card.dataset.decimals) || 0, 0), 6);
    const input = card.querySelector(".setpoint-input");
    if (input && document.activeElement !== input) input.value = value.toFixed(decimals);
    if (!(step > 0) || !input) return;
    const min = Number(input.min);
    const max = Number(input.max);
    for (const [cls, dir] of [["nudge-minus", -1], ["nudge-plus", 1]]) {
      const form = card.querySelector("." + cls);
      if (!form) continue;
      const next = Number((value + dir * step).toFixed(decimals));
      const ok = next >= min - 1e-9 && next <= max + 1e-9;
      form.querySelector('input[name="value"]').value = ok ? next.toFixed(decimals) : "";
      form.querySelector("button").disabled = !ok;
    }
  }

  function onControlState(msg) {
    const card = cards.get(msg.control);
    if (card) {
      setText(card.querySelector(".commanded"), shown(card, msg.commanded));
      setText(card.querySelector(".reported"), shown(card, msg.reported));
      if (card.dataset.kind === "setpoint") {
        followValue(card, typeof msg.commanded === "number" ? msg.commanded : msg.reported);
      }
      if (card.dataset.kind === "output") {
        const v = typeof msg.reported === "number" ? msg.reported : msg.commanded;
        card.dataset.state = typeof v === "number" ? (v >= 0.5 ? "on" : "off") : "unknown";
        if (msg.source === "schedule") card.dataset.hasSchedule = "true";
      }
      setWhy(card, msg.source || "none", msg.until);
      // The agent's own words (who switches it: the device's clock table, ...).
      const note = card.querySelector(".why-note");
      if (note) {
        const text = typeof msg.note === "string" ? msg.note : "";
        setText(note, text);
        note.hidden = text === "";
      }
      if (card.dataset.kind === "output") setOutputButtons(card);
    }
    const drivenBy = msg.source === "action" && msg.action ? msg.action : null;
    if (drivenBy) {
      const action = root.querySelector(`[data-kind="action"][data-action="${CSS.escape(drivenBy)}"]`);
      if (action) {
        action.dataset.drives = msg.control;
        setAction(action, true, msg.until);
      }
    }
    // A point a running action drove follows something else now: the action
    // was stopped or ended by itself at the agent.
    for (const action of root.querySelectorAll('[data-kind="action"][data-running="true"]')) {
      if (action.dataset.drives === msg.control && action.dataset.action !== drivenBy) {
        setAction(action, false, null);
      }
    }
  }

  // A button about to be disabled hands keyboard focus to `next`, so a
  // keyboard user is not dropped to the top of the page.
  function disable(button, disabled, next) {
    if (disabled && document.activeElement === button && next) next.focus();
    button.disabled = disabled;
  }

  // An output's buttons follow its state: On and Off show which one holds
  // (aria-pressed), and the release button says what it will do and is
  // offered only when there is manual control to release.
  function setOutputButtons(card) {
    const form = card.querySelector(".output-form");
    if (!form) return;
    const button = (value) => form.querySelector(`button[name="state"][value="${value}"]`);
    for (const value of ["on", "off"]) {
      const b = button(value);
      if (b) b.setAttribute("aria-pressed", card.dataset.state === value ? "true" : "false");
    }
    const release = button("auto");
    if (release) {
      setText(release, text(card.dataset.hasSchedule === "true" ? "to-schedule" : "release-manual"));
      disable(release, ["schedule", "device"].includes(card.dataset.source), button("on"));
    }
  }

  function setAction(action, running, until) {
    action.dataset.running = running ? "true" : "false";
    if (!running) action.dataset.drives = "";
    const why = action.querySelector(".why");
    if (why && why.firstChild && why.firstChild.nodeType === Node.TEXT_NODE) {
      why.firstChild.nodeValue = text(running ? "running-until" : "not-running") + " ";
    }
    setUntil(action, until);
    // While it runs, Stop is the main button and Start restarts it from now.
    const start = action.querySelector('button[name="op"][value="start"]');
    const stop = action.querySelector('button[name="op"][value="stop"]');
    if (start) {
      setText(start, text(running ? "restart" : "start"));
      start.classList.toggle("btn-primary", !running);
      start.classList.toggle("btn-quiet", running);
    }
    if (stop) {
      stop.classList.toggle("btn-primary", running);
      stop.classList.toggle("btn-quiet", !running);
      disable(stop, !running, start);
    }
  }

  // Server-rendered times carry a UTC fallback text; show them as
  // localtime.js does for the first render.
  function localizeTimes(el) {
    for (const t of el.querySelectorAll("time[data-local-time]")) {
      const shown = localTime(t.getAttribute("datetime"));
      if (shown) setText(t, shown);
    }
  }

  function onCommand(msg) {
    const card = cards.get(msg.control);
    if (!card) return;
    const line = card.querySelector(".last-command");
    if (!line) return;
    const status = msg.status || "";
    line.hidden = false;
    line.dataset.status = status;
    line.dataset.commandId = msg.command_id || "";
    const key = { held_for_confirmation: "held" }[status] || status;
    setText(line.querySelector(".last-status"), text("st-" + key) || status);
    const texts = msg.reason_text && typeof msg.reason_text === "object" ? msg.reason_text : null;
    const reason = (texts && (texts[lang] || texts.en)) || msg.reason || "";
    setText(line.querySelector(".last-reason"), reason ? `(${reason})` : "");
    const meta = line.querySelector(".last-meta");
    if (meta && msg.at) setText(meta, localTime(msg.at));
  }

  // Whatever the site answered between this page's render and its live
  // feed's opening is in no live message: the agent's reply to a command
  // often arrives in that gap. Each (re)subscription starts with a
  // `snapshot`, so on it the page fetches itself once and adopts the cards
  // as the server renders them now.
  // A live message that lands while the page is being fetched is newer than
  // that render: then the render is thrown away and fetched again.
  let resyncing = false;
  let liveSeq = 0;
  async function resync() {
    if (resyncing) return;
    resyncing = true;
    try {
      let html = null;
      for (let attempt = 0; attempt < 3 && html === null; attempt++) {
        const seq = liveSeq;
        const res = await fetch(location.href, { credentials: "same-origin", headers: { Accept: "text/html" } });
        if (!res.ok) return;
        const text = await res.text();
        if (seq === liveSeq) html = text;
      }
      if (html === null) return;
      const fresh = new DOMParser().parseFromString(html, "text/html");
      for (const [key, card] of cards) {
        const now = fresh.querySelector(`[data-control-key="${CSS.escape(key)}"]`);
        if (!now) continue;
        const adopted = document.importNode(now, true);
        localizeTimes(adopted);
        card.replaceWith(adopted);
        cards.set(key, adopted);
      }
      root.dataset.resyncs = String((Number(root.dataset.resyncs) || 0) + 1);
    } catch {
      // The live feed goes on; the next snapshot tries again.
    } finally {
      resyncing = false;
    }
  }

  function onMessage(msg) {
    if (msg && msg.type === "snapshot") {
      resync();
      return;
    }
    liveSeq++;
    switch (msg && msg.type) {
      case "control_state":
        onControlState(msg);
        break;
      case "command":
        onCommand(msg);
        break;
      default:
        return; // readings, snapshots and types added later
    }
    events += 1;
    root.dataset.events = String(events);
  }

  const liveUrl = root.dataset.liveUrl;
  let backoff = BACKOFF_MIN_MS;

  function connect() {
    if (!liveUrl) return;
    const url = (location.protocol === "https:" ? "wss://" : "ws://") + location.host + liveUrl;
    let socket;
    try {
      socket = new WebSocket(url);
    } catch {
      setTimeout(connect, backoff);
      return;
    }
    socket.addEventListener("open", () => {
      backoff = BACKOFF_MIN_MS;
      root.dataset.live = "open";
    });
    socket.addEventListener("message", (ev) => {
      let msg = null;
      try {
        msg = JSON.parse(ev.data);
      } catch {
        return;
      }
      onMessage(msg);
    });
    socket.addEventListener("close", () => {
      root.dataset.live = "closed";
      const wait = backoff * (0.75 + Math.random() * 0.5);
      backoff = Math.min(backoff * 2, BACKOFF_MAX_MS);
      setTimeout(connect, wait);
    });
  }

  connect();
}
