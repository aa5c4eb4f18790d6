// The operator dashboard (coordinator/service/dashboard.py). A static page: it asks for the operator token, keeps it
// in this tab's sessionStorage and polls the operator views with `Authorization: Bearer`. Everything is written
// with textContent / SVG attributes – never parsed as HTML (log messages can carry attacker text) – and no inline styles
// (the coordinator serves the page under `Content-Security-Policy: default-src 'self'`).

const TOKEN_KEY = "flOperatorToken";
const POLL_MS = 2000;
const MAX_ROWS = 500; // clients shown in the table
const SVG = "http://www.w3.org/2000/svg";

const state = { // read by tests (tests/test_dashboard_browser.py)
  status: "login", // login | loading | ok | unauthorized | disabled | error
  message: "",
  polls: 0,
  points: {},
  clients: 0,
  events: 0,
  bans: 0,
};
window.flDashboard = state;

const $ = (id) => document.getElementById(id);
let timer = null;

function token() {
  return sessionStorage.getItem(TOKEN_KEY);
}

function showLogin(message) {
  if (timer !== null) clearTimeout(timer);
  timer = null;
  $("board").hidden = true;
  $("logout").hidden = true;
  $("live").hidden = true;
  $("login").hidden = false;
  const err = $("auth-error");
  err.hidden = !message;
  err.textContent = message || "";
  $("token").focus();
}

function showBoard() {
  $("login").hidden = true;
  $("board").hidden = false;
  $("logout").hidden = false;
}

class HttpError extends Error {
  constructor(status, path) {
    super(`${path}: HTTP ${status}`);
    this.status = status;
  }
}

async function get(path) {
  const r = await fetch(path, {
    headers: { Authorization: `Bearer ${token()}` },
    cache: "no-store",
    credentials: "omit",
    referrerPolicy: "no-referrer",
  });
  if (!r.ok) throw new HttpError(r.status, path);
  return r.json();
}

async function poll() {
  timer = null;
  if (!token()) return showLogin("");
  try {
    const [status, rounds, events] = await Promise.all([
      get("/status/operator"), get("/status/operator/rounds"), get("/status/operator/events")]);
    state.polls += 1;
    state.status = "ok";
    state.message = "";
    showBoard();
    $("net-error").hidden = true;
    $("live").hidden = false;
    render(status, rounds, events);
  } catch (e) {
    if (e instanceof HttpError && e.status === 401) {
      sessionStorage.removeItem(TOKEN_KEY);
      state.status = "unauthorized";
      state.message = "The coordinator refused this token (401 Unauthorized). Check the operator token and try again.";
      return showLogin(state.message);
    }
    if (e instanceof HttpError && e.status === 404) {
      state.status = "disabled";
      state.message = "The operator view is disabled on this coordinator (404): start it with " +
        "--operator-token-file or FL_OPERATOR_TOKEN.";
      return showLogin(state.message);
    }
    state.status = "error";
    state.message = `Cannot reach the coordinator: ${e.message}. Retrying…`;
    $("live").hidden = true;
    const net = $("net-error");
    net.hidden = false;
    net.textContent = state.message;
  }
  timer = setTimeout(poll, POLL_MS);
}

// ── formatting ───────────────────────────────────────────────────────────────────────────────────────────
function num(v, digits = 3) {
  if (v === null || v === undefined || Number.isNaN(v)) return "–";
  if (!Number.isFinite(v)) return v > 0 ? "∞" : "−∞";
  if (Number.isInteger(v) && Math.abs(v) < 1e5) return String(v);
  return Math.abs(v) >= 1000 || Math.abs(v) < 0.001 ? v.toExponential(2) : v.toPrecision(digits);
}

function pct(v) {
  return v === null || v === undefined ? "–" : `${(100 * v).toFixed(1)} %`;
}

function setText(id, text) {
  $(id).textContent = text;
}

function el(tag, text, cls) {
  const e = document.createElement(tag);
  if (text !== undefined && text !== null) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

// ── rendering ────────────────────────────────────────────────────────────────────────────────────────────
function render(s, rounds, events) {
  const m = s.metrics || {};
  const p = s.privacy || {};
  const clients = s.clients || [];
  const rip = s.round_in_progress;
  setText("c-round", `${s.round} / ${s.rounds}`);
  setText("c-progress", s.finished ? `finished: ${s.stopped_reason}` :
    rip ? `round ${rip.round} in progress: ${rip.stage || ""} ${rip.groups} group(s)` +
      (rip.phases && rip.phases.length ? ` (${rip.phases.join(", ")})` : "") : "waiting for clients");
  setText("c-accuracy", pct(m.accuracy));
  setText("c-loss", m.loss !== undefined ? `loss ${num(m.loss)}` : "");
  setText("c-epsilon", p.private ? num(p.epsilon) : "no DP noise");
  setText("c-budget", p.private ? `budget ${num(p.epsilon_budget)} · δ ${num(p.delta)} · third party ` +
    num(p.epsilon_third_party) : "");
  setText("c-clip", num(p.l2_clip));
  setText("c-noise", `noise ×${num(p.noise_multiplier)}` +
    (p.adaptive_clip_quantile ? ` · adaptive (quantile ${num(p.adaptive_clip_quantile)})` : " · fixed"));
  const banned = clients.filter((c) => c.banned).length;
  setText("c-clients", `${s.connected} connected`);
  setText("c-clients-detail", `${s.ready} ready · ${clients.length} registered · ${banned} banned`);
  setText("c-duration", m.duration !== undefined ? `${num(m.duration)} s` : "–");
  setText("c-groups", m.groups !== undefined ? `${m.groups_ok}/${m.groups} groups ok · ${m.survivors} inputs` : "");
  setText("c-key", `${(s.coordinator_key || "").slice(0, 16)}…`);
  setText("c-config", `${s.clients_per_round} clients/round · groups of ${s.group_size} · ${s.aggregator}`);
  setText("c-updated", new Date().toLocaleTimeString());

  const pts = rounds.points || [];
  const series = (key) => pts.filter((q) => q[key] !== null && q.round !== null).map((q) => [q.round, q[key]]);
  state.points = {
    accuracy: chart("chart-accuracy", series("accuracy"), { yMin: 0, yMax: 1, format: pct }),
    loss: chart("chart-loss", series("loss"), { yMin: 0 }),
    epsilon: chart("chart-epsilon", series("epsilon"), { yMin: 0 }),
    clip: chart("chart-clip", series("clip"), { yMin: 0 }),
  };
  renderClients(clients);
  renderEvents(events);
}

function renderClients(clients) {
  const body = $("clients").tBodies[0];
  const rows = clients.slice(0, MAX_ROWS).map((c) => {
    const tr = document.createElement("tr");
    if (c.banned) tr.className = "banned";
    const id = el("td", c.id.slice(0, 12), "mono");
    id.title = c.id;
    const trust = el("td");
    const meter = document.createElement("meter");
    meter.min = 0;
    meter.max = 1;
    meter.low = 0.2;
    meter.optimum = 1;
    meter.value = c.trust;
    trust.append(meter, ` ${num(c.trust)}`);
    tr.append(id, el("td", c.kind || "–"), el("td", c.state, `state-${c.state}`), trust,
      el("td", c.banned ? "banned" : "no", c.banned ? "bad" : ""), el("td", num(c.observations)),
      el("td", num(c.participations)), el("td", num(c.epsilon)));
    return tr;
  });
  body.replaceChildren(...rows);
  state.clients = rows.length;
  setText("clients-note", clients.length > MAX_ROWS ? `(first ${MAX_ROWS} of ${clients.length})` :
    `(${clients.length})`);
}

function eventItem(e) {
  const li = el("li", null, `event ${e.kind || "ban"}`);
  li.append(el("time", new Date(e.time * 1000).toLocaleTimeString()), el("span", e.kind || "ban", "badge"),
    el("span", e.message, "msg"));
  if (e.count > 1) li.append(el("span", `×${e.count}`, "repeat"));
  return li;
}

function renderEvents(snap) {
  const list = snap.events || [];
  const items = list.slice().reverse().map(eventItem);
  if (!items.length) items.push(el("li", "nothing logged at warning level or above", "empty"));
  $("events").replaceChildren(...items);
  const bans = (snap.bans || []).slice().reverse().map(eventItem);
  if (!bans.length) bans.push(el("li", "no client banned", "empty"));
  $("bans").replaceChildren(...bans);
  state.events = list.length;
  state.bans = (snap.bans || []).length;
  const c = snap.counts || {};
  setText("bans-note", `(${snap.ban_count || 0} since start)`);
  setText("events-note", `(since start: ${c.warning || 0} warnings, ${(c.error || 0) + (c.critical || 0)} errors; ` +
    `the last ${snap.capacity} kept, repeats folded)`);
}

// ── charts: inline SVG ───────────────────────────────────────────────────────────────────────────────────
function svg(tag, attrs, text) {
  const e = document.createElementNS(SVG, tag);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

// Draws [[round, value], …] into the figure `id`; returns the number of points drawn.
function chart(id, data, opts) {
  const fig = $(id);
  const W = 420, H = 170, L = 48, R = 10, T = 10, B = 26;
  const old = fig.querySelector("svg");
  const box = svg("svg", { viewBox: `0 0 ${W} ${H}`, class: "plot", role: "img", "data-points": data.length });
  const fmt = opts.format || ((v) => num(v));
  if (!data.length) {
    box.append(svg("text", { x: W / 2, y: H / 2, "text-anchor": "middle", class: "empty" }, "no rounds yet"));
  } else {
    const xs = data.map((d) => d[0]), ys = data.map((d) => d[1]);
    let x0 = Math.min(...xs), x1 = Math.max(...xs);
    if (x0 === x1) { x0 -= 1; x1 += 1; }
    let y0 = Math.min(...ys, opts.yMin ?? Infinity), y1 = Math.max(...ys, opts.yMax ?? -Infinity);
    if (opts.yMax === undefined) y1 += (y1 - y0) * 0.05;
    if (y0 === y1) { y0 -= 0.5; y1 += 0.5; }
    const sx = (x) => L + (x - x0) / (x1 - x0) * (W - L - R);
    const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
    for (const t of [0, 0.5, 1]) { // grid lines with their values
      const y = y0 + t * (y1 - y0);
      box.append(svg("line", { x1: L, x2: W - R, y1: sy(y), y2: sy(y), class: "grid" }),
        svg("text", { x: L - 4, y: sy(y) + 4, "text-anchor": "end", class: "tick" }, fmt(y)));
    }
    box.append(svg("text", { x: L, y: H - 8, class: "tick" }, `round ${Math.min(...xs)}`),
      svg("text", { x: W - R, y: H - 8, "text-anchor": "end", class: "tick" }, `round ${Math.max(...xs)}`));
    box.append(svg("polyline", { points: data.map(([x, y]) => `${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join(" "),
      class: "line" }));
    const dots = svg("g", { class: "points" });
    for (const [x, y] of data) {
      const c = svg("circle", { cx: sx(x).toFixed(1), cy: sy(y).toFixed(1), r: data.length > 100 ? 1.5 : 3,
        class: "pt", "data-round": x, "data-value": y });
      c.append(svg("title", {}, `round ${x}: ${fmt(y)}`));
      dots.append(c);
    }
    box.append(dots);
  }
  if (old) old.replaceWith(box); else fig.append(box);
  return data.length;
}

// ── start ────────────────────────────────────────────────────────────────────────────────────────────────
function start() {
  $("token-form").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const t = $("token").value.trim();
    if (!t) return;
    sessionStorage.setItem(TOKEN_KEY, t);
    $("token").value = "";
    state.status = "loading";
    $("auth-error").hidden = true;
    if (timer !== null) clearTimeout(timer);
    poll();
  });
  $("logout").addEventListener("click", () => {
    sessionStorage.removeItem(TOKEN_KEY);
    state.status = "login";
    showLogin("");
  });
  if (token()) {
    state.status = "loading";
    poll();
  } else {
    showLogin("");
  }
}

start();
