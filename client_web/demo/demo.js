// The demo page ("/" on the coordinator): joins the federation with a digits shard through the SDK, shows the
// round, this tab's local loss, global accuracy, the tab's privacy policy and its own privacy ledger next to the
// coordinator's figures, and classifies digits drawn on a canvas.
//
// URL parameters: shard=I/N (default: a random one of 10) · partition=dirichlet:0.5|iid · identity=NAME
// (IndexedDB identity slot; "ephemeral" = none) · the privacy policy, for demos that relax it (each one is shown
// as relaxed on the page): minGroupSize, thresholdRule, colluders, allowSparseGraph, minNoise, epsilonBudget
// (a number, or inf/none), delta, maxAbortedReveals – e.g. ?minNoise=0.05&epsilonBudget=inf.
// window.flDemo holds the state; a "fl-demo-client" event on window (detail: the FlClient) fires before the
// client joins, so a script can add its own listeners.
import { connect } from "/sdk/sdk/fl-client.js";

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const demo = { client: null, events: [], history: [], losses: {}, summary: null, error: null, prediction: null,
               privacyOptions: {}, policy: null, ledger: null, declines: [], downloads: [],
               readyMs: null, readyAt: null, startedAt: null, trainSeconds: [] };
window.flDemo = demo;

// ── the privacy policy from the URL ───────────────────────────────────────────────────────────────────
// The policy options the URL may set. Their defaults come from the Python side once the runtime is loaded
// (client.defaultPolicy = flcore.policy.PrivacyPolicy()); until then these stand in for the first render.
const POLICY_KEYS = ["minGroupSize", "thresholdRule", "colluders", "allowSparseGraph", "minNoise", "epsilonBudget",
                     "delta", "maxAbortedReveals"];
let DEFAULT_POLICY = { minGroupSize: 5, thresholdRule: "two-thirds", colluders: 1, allowSparseGraph: false,
                       minNoise: 0.5, epsilonBudget: 10, delta: 1e-6, maxAbortedReveals: 10 };

function privacyFromUrl() {
  const out = {};
  for (const key of POLICY_KEYS) {
    const raw = params.get(key);
    if (raw === null) continue;
    let v;
    if (key === "thresholdRule") v = raw;
    else if (key === "allowSparseGraph") v = /^(1|true|yes)$/i.test(raw);
    else if (key === "epsilonBudget" && /^(inf|infinity|none|∞)$/i.test(raw)) v = null;
    else {
      v = Number(raw);
      if (raw.trim() === "" || Number.isNaN(v)) throw new Error(`URL parameter ${key}=${raw}: not a number`);
    }
    out[key] = v;
  }
  return out;
}

// ε in plain digits (1.1e+4 read as a typo): 2 decimals below 100, whole numbers with thousands separators above
const fmtEps = (e) => (e === null || e === undefined ? "∞" : e < 100 ? e.toFixed(2)
  : Math.round(e).toLocaleString("en-US"));
const fmtDelta = (d) => (typeof d === "number" && d > 0 && d < 1e-3 ? d.toExponential() : String(d));
const fmtBudget = (b) => (b === null || b === undefined || b === Infinity ? "none (∞)" : String(b));

function describeValue(key, v) {
  if (key === "epsilonBudget") return fmtBudget(v);
  if (key === "allowSparseGraph") return v ? "accepted" : "refused";
  if (key === "delta") return fmtDelta(v);
  return String(v);
}

/** Is this policy value weaker than the default (it protects the tab less)? */
function isRelaxed(key, v) {
  const d = DEFAULT_POLICY[key];
  switch (key) {
    case "thresholdRule": return v !== d && v === "majority";
    case "allowSparseGraph": return Boolean(v) && !d;
    case "epsilonBudget": return v === null || v === Infinity || v > d;
    case "delta": case "maxAbortedReveals": return v > d;
    default: return v < d; // minGroupSize, colluders, minNoise
  }
}

function showPolicy(policy, fromUrl) {
  const rows = { minGroupSize: "pol-group", thresholdRule: "pol-threshold", colluders: "pol-colluders",
                 allowSparseGraph: "pol-graph", minNoise: "pol-noise", epsilonBudget: "pol-budget", delta: "pol-delta" };
  for (const [key, row] of Object.entries(rows)) {
    $(`${row}-v`).textContent = describeValue(key, policy[key]);
    $(row).classList.toggle("relaxed", isRelaxed(key, policy[key]));
  }
  const changed = Object.keys(fromUrl).filter((k) => fromUrl[k] !== DEFAULT_POLICY[k]);
  const relaxed = changed.filter((k) => isRelaxed(k, policy[k]));
  const list = (keys) => keys.map((k) => `${k} = ${describeValue(k, policy[k])} (default ${describeValue(k, DEFAULT_POLICY[k])})`).join(", ");
  const banner = $("policy-banner");
  if (relaxed.length) {
    banner.className = "banner";
    banner.textContent = `Relaxed policy set by the URL for this demo – weaker than the default: ${list(relaxed)}` +
      (changed.length > relaxed.length ? `; also ${list(changed.filter((k) => !relaxed.includes(k)))}` : "");
  } else if (changed.length) {
    banner.className = "banner default";
    banner.textContent = `Policy set by the URL, stricter than the default: ${list(changed)}`;
  } else {
    const d = DEFAULT_POLICY;
    banner.className = "banner default";
    banner.textContent = `Default policy: groups of at least ${d.minGroupSize}, ${d.thresholdRule} threshold against ` +
      `${d.colluders} colluder${d.colluders === 1 ? "" : "s"}, ${d.allowSparseGraph ? "sparse graphs accepted" : "complete graph"}, ` +
      `noise z ≥ ${d.minNoise}, ε budget ${fmtBudget(d.epsilonBudget)} at δ = ${fmtDelta(d.delta)}.`;
  }
  demo.relaxed = relaxed;
}

function showLedger(l) {
  demo.ledger = l;
  $("led-eps").textContent = l.participations ? fmtEps(l.epsilon) : "0";
  $("led-worst").textContent = l.participations ? fmtEps(l.epsilonWorstCase) : "0";
  $("led-rounds").textContent = String(l.participations);
  $("led-rounds-sub").textContent = l.lastRound === null ? "your update was in" : `your update was in (last: round ${l.lastRound})`;
  $("led-eps-sub").textContent = `guaranteed figure at δ = ${fmtDelta(l.delta)}, charged to your budget`;
  if (l.budget === null) {
    $("led-left").textContent = "∞";
    $("led-left-sub").textContent = "no ε budget";
  } else {
    const left = l.epsilon === null ? 0 : Math.max(0, l.budget - l.epsilon);
    $("led-left").textContent = left.toFixed(2);
    $("led-left-sub").textContent = `of your ε budget ${l.budget}`;
  }
}

function showCoordinator(s) {
  if (s.groupSize !== null && s.groupSize !== undefined) $("co-group").textContent = String(s.groupSize);
  if (s.thresholdRule) $("co-threshold").textContent = s.thresholdRule;
  if (s.colluders !== null && s.colluders !== undefined) $("co-colluders").textContent = String(s.colluders);
  if (s.noiseMultiplier !== null && s.noiseMultiplier !== undefined) $("co-noise").textContent = String(s.noiseMultiplier);
  if (s.epsilon !== null && s.epsilon !== undefined) $("co-eps").textContent = fmtEps(s.epsilon);
  if (s.delta !== null && s.delta !== undefined) $("co-delta").textContent = fmtDelta(s.delta);
  if (s.round !== undefined) $("co-budget").textContent = fmtBudget(s.epsilonBudget);
}

/** "groups of 3 < the client's minimum 5" → "declined: groups of 3 < your minimum 5". */
function showDecline(d) {
  const text = `declined round ${d.round}: ${d.message.replace(/the client's/g, "your")} (${d.code})`;
  demo.declines.push({ ...d, text });
  const el = $("declined");
  el.hidden = false;
  el.textContent = demo.declines.length > 1 ? `${text} – ${demo.declines.length} tasks declined so far` : text;
  return text;
}

function setStatus(text, cls = "") {
  $("status").textContent = text;
  $("status").className = cls;
}

function log(text) {
  const li = document.createElement("li");
  li.textContent = `${new Date().toLocaleTimeString()}  ${text}`;
  $("log").prepend(li);
  while ($("log").children.length > 40) $("log").lastChild.remove();
}

/** The URL's shard, else the one this identity drew before (localStorage), else a random one of 10 – a reload
 * keeps training on the same data. */
function pickShard(identity) {
  const m = /^(\d+)\/(\d+)$/.exec(params.get("shard") ?? "");
  if (m && +m[1] < +m[2]) return { i: +m[1], n: +m[2] };
  const key = `fl-demo-shard#${identity}`;
  try {
    const kept = /^(\d+)\/(\d+)$/.exec(localStorage.getItem(key) ?? "");
    if (kept && +kept[1] < +kept[2]) return { i: +kept[1], n: +kept[2] };
  } catch { /* storage unavailable: a random shard */ }
  const n = 10;
  const shard = { i: Math.floor(Math.random() * n), n };
  try { localStorage.setItem(key, `${shard.i}/${shard.n}`); } catch { /* not kept */ }
  return shard;
}

function base64ToFloat32(b64) {
  const bin = atob(b64);
  const bytes = new Uint8Array(bin.length);
  for (let k = 0; k < bin.length; k++) bytes[k] = bin.charCodeAt(k);
  return new Float32Array(bytes.buffer);
}

// ── chart: global accuracy (blue) and this tab's local loss (orange) per round ─────────────────────────
// (the local loss never leaves the tab: the coordinator does not know it)
function drawChart() {
  const svg = $("chart");
  const h = demo.history.map((p) => ({ ...p, localLoss: demo.losses[p.round] ?? null }));
  const W = 600, H = 170, P = 30;
  if (!h.length) { svg.innerHTML = ""; return; }
  const maxRound = Math.max(...h.map((p) => p.round), 2);
  const maxLoss = Math.max(...h.map((p) => p.localLoss ?? 0), 0.5);
  const x = (r) => P + ((r - 1) / Math.max(1, maxRound - 1)) * (W - 2 * P);
  const line = (key, scale, color) => {
    const pts = h.filter((p) => p[key] !== null && p[key] !== undefined).map((p) => `${x(p.round).toFixed(1)},${(H - P - (p[key] / scale) * (H - 2 * P)).toFixed(1)}`);
    return pts.length ? `<polyline fill="none" stroke="${color}" stroke-width="2.5" points="${pts.join(" ")}"/>` +
      pts.map((pt) => `<circle cx="${pt.split(",")[0]}" cy="${pt.split(",")[1]}" r="3" fill="${color}"/>`).join("") : "";
  };
  const yTicks = [0, 0.5, 1].map((v) => {
    const y = (H - P - v * (H - 2 * P)).toFixed(1);
    return `<line x1="${P}" y1="${y}" x2="${W - P}" y2="${y}" stroke="#eef0f5"/>` +
      `<text x="${P - 4}" y="${y}" font-size="10" fill="#2f6fed" text-anchor="end" dominant-baseline="middle">${100 * v}%</text>` +
      `<text x="${W - P + 4}" y="${y}" font-size="10" fill="#e8710a" dominant-baseline="middle">${(v * maxLoss).toFixed(1)}</text>`;
  }).join("");
  const step = Math.max(1, Math.ceil(maxRound / 6));
  const xTicks = [];
  for (let r = 1; r <= maxRound; r += step) {
    xTicks.push(`<text x="${x(r).toFixed(1)}" y="${H - P + 13}" font-size="10" fill="#667085" text-anchor="middle">${r}</text>`);
  }
  svg.innerHTML = `${yTicks}${xTicks.join("")}<line x1="${P}" y1="${H - P}" x2="${W - P}" y2="${H - P}" stroke="#ccd"/>
    <text x="${P}" y="14" font-size="12" fill="#2f6fed">global accuracy</text>
    <text x="${P + 120}" y="14" font-size="12" fill="#e8710a">this tab's local loss</text>
    <text x="${W - P}" y="${H - 1}" font-size="10" fill="#667085" text-anchor="end">round</text>
    ${line("accuracy", 1, "#2f6fed")}${line("localLoss", maxLoss, "#e8710a")}`;
}

/** "waiting for clients: k of m ready" – how many more the next round needs (m = clients per round; with a
 * smaller min_clients_per_round a round also starts with that many once every connected client is ready). */
function waitingText(s) {
  if (s.ready === null || s.ready === undefined || !s.clientsPerRound) return "waiting for clients";
  const need = s.clientsPerRound;
  const min = s.minClientsPerRound ?? need;
  const more = min < need ? ` (or ${min} once every connected client is ready)` : "";
  return `waiting for clients: ${s.ready} of ${need} ready${more}`;
}

/** The round card: from /status and from round-done events, whichever is later (it never goes back). */
function showRound(round) {
  demo.shownRound = Math.max(round, demo.shownRound ?? 0);
  if (demo.rounds) $("round").textContent = `${demo.shownRound} / ${demo.rounds}`;
}

function showStatus(s) {
  if (s.round !== undefined) {
    demo.rounds = s.rounds;
    showRound(s.round);
    $("round-sub").textContent = s.finished ? "finished" : s.inProgress ? `round ${s.inProgress.round} in progress`
      : waitingText(s);
  }
  if (s.accuracy !== null && s.accuracy !== undefined) $("accuracy").textContent = `${(100 * s.accuracy).toFixed(1)}%`;
  if (s.loss !== null && s.loss !== undefined) $("accuracy-sub").textContent = `test loss ${s.loss.toFixed(3)}`;
  if (s.epsilon !== null && s.epsilon !== undefined) {
    $("epsilon").textContent = fmtEps(s.epsilon);
    const budget = s.epsilonBudget === null || s.epsilonBudget === undefined ? "no budget" : `budget ${fmtEps(s.epsilonBudget)}`;
    $("epsilon-sub").textContent = `of ${budget}, its accountant, δ = ${fmtDelta(s.delta)}`;
  }
  showCoordinator(s);
  if (s.connected !== undefined) $("clients").textContent = String(s.connected);
  if (s.round > 0 && !demo.history.some((p) => p.round === s.round)) {
    demo.history.push({ round: s.round, accuracy: s.accuracy });
    drawChart();
    predictDrawing();
  }
}

// ── drawing → 8×8 like scikit-learn's digits ───────────────────────────────────────────────────────────
const pad = $("pad");
const ctx = pad.getContext("2d", { willReadFrequently: true });
let drawing = false, dirty = false, last = null;

function clearPad() {
  ctx.fillStyle = "#fff";
  ctx.fillRect(0, 0, pad.width, pad.height);
  $("preview").getContext("2d").clearRect(0, 0, 8, 8);
  $("prediction").textContent = "";
  $("prediction-sub").textContent = "draw 0–9 in the box";
  demo.prediction = null;
  dirty = false;
}

function pos(e) {
  const r = pad.getBoundingClientRect();
  return [(e.clientX - r.left) * (pad.width / r.width), (e.clientY - r.top) * (pad.height / r.height)];
}

pad.addEventListener("pointerdown", (e) => { drawing = true; last = pos(e); pad.setPointerCapture(e.pointerId); stroke(last); });
pad.addEventListener("pointermove", (e) => { if (drawing) stroke(pos(e)); });
pad.addEventListener("pointerup", () => { drawing = false; last = null; predictDrawing(); });
$("clear").addEventListener("click", clearPad);

function stroke(p) {
  ctx.strokeStyle = "#000";
  ctx.lineWidth = 18;
  ctx.lineCap = ctx.lineJoin = "round";
  ctx.beginPath();
  ctx.moveTo(...(last ?? p));
  ctx.lineTo(...p);
  ctx.stroke();
  last = p;
  dirty = true;
}

/** 64 features in [0, 1]: crop to the ink, fit into 32×32 (aspect kept, centred), count ink in 4×4 blocks / 16. */
function features() {
  const { width: W, height: H } = pad;
  const img = ctx.getImageData(0, 0, W, H).data;
  let x0 = W, y0 = H, x1 = -1, y1 = -1;
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    if (img[4 * (y * W + x)] < 128) { x0 = Math.min(x0, x); x1 = Math.max(x1, x); y0 = Math.min(y0, y); y1 = Math.max(y1, y); }
  }
  if (x1 < 0) return null;
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1, s = 32 / Math.max(bw, bh);
  const tw = Math.max(1, Math.round(bw * s)), th = Math.max(1, Math.round(bh * s));
  const small = document.createElement("canvas");
  small.width = small.height = 32;
  const sc = small.getContext("2d", { willReadFrequently: true });
  sc.fillStyle = "#fff";
  sc.fillRect(0, 0, 32, 32);
  sc.imageSmoothingQuality = "high";
  sc.drawImage(pad, x0, y0, bw, bh, Math.floor((32 - tw) / 2), Math.floor((32 - th) / 2), tw, th);
  const px = sc.getImageData(0, 0, 32, 32).data;
  const out = new Float32Array(64);
  for (let by = 0; by < 8; by++) for (let bx = 0; bx < 8; bx++) {
    let on = 0;
    for (let dy = 0; dy < 4; dy++) for (let dx = 0; dx < 4; dx++) if (px[4 * ((4 * by + dy) * 32 + 4 * bx + dx)] < 128) on++;
    out[8 * by + bx] = on / 16;
  }
  return out;
}

async function predictDrawing() {
  if (!dirty) return;
  const x = features();
  if (!x) return;
  const pv = $("preview").getContext("2d");
  const im = pv.createImageData(8, 8);
  for (let k = 0; k < 64; k++) { const v = 255 - Math.round(255 * x[k]); im.data.set([v, v, v, 255], 4 * k); }
  pv.putImageData(im, 0, 0);
  if (!demo.client) return;
  try {
    const [cls] = await demo.client.predict(x);
    demo.prediction = cls;
    $("prediction").textContent = String(cls);
    $("prediction-sub").textContent = `global model after round ${demo.modelRound ?? "?"}`;
  } catch {
    $("prediction-sub").textContent = "waiting for the first global model";
  }
}

// ── loading: progress bar, retries, service worker ─────────────────────────────────────────────────────
const MB = (n) => (n / 1e6).toFixed(1);
const STAGES = { assets: "asset list", pyodide: "Python started", sodium: "crypto ready", kernel: "kernel ready",
                 "python-files": "client code loaded" };

function showLoading(ev) {
  const bar = $("load-bar"), text = $("load-text");
  const secs = ev.ms === undefined ? "" : ` (${(ev.ms / 1000).toFixed(1)} s)`;
  if (ev.stage === "download") {
    demo.downloads.push({ loaded: ev.loaded, total: ev.total, cachedBytes: ev.cachedBytes, ms: ev.ms });
    bar.max = Math.max(1, ev.total);
    bar.value = ev.loaded;
    text.textContent = ev.cachedBytes >= ev.total ? `files from this browser's cache${secs}`
      : `downloading ${MB(ev.loaded)} of ${MB(ev.total)} MB${secs}`;
    setStatus(ev.loaded < ev.total ? "downloading Python (Pyodide), the WASM kernel and libsodium…"
      : "starting Python in a worker…");
  } else if (ev.stage === "download-retry") {
    log(`download stalled (${ev.error}); resuming at ${MB(ev.resumeAt)} MB`);
  } else if (ev.stage === "retry") {
    setStatus(`loading failed: ${ev.error} – retrying in ${(ev.retryInMs / 1000).toFixed(0)} s (attempt ${ev.attempt + 1})`, "error");
    log(`loading failed: ${ev.error}`);
  } else if (ev.stage === "ready") {
    bar.value = bar.max;
    $("loading").hidden = true;
    demo.readyMs = ev.ms;
    demo.readyAt = performance.now(); // since navigation start
    setStatus(`loaded in ${(ev.ms / 1000).toFixed(1)} s – connecting…`);
  } else if (STAGES[ev.stage]) {
    text.textContent = `${STAGES[ev.stage]}${secs}`;
    if (ev.stage === "pyodide") setStatus("loading the Python client core…");
  }
}

/** The service worker keeps the page, the SDK and the runtime's files: a returning tab starts from them, also
 * when the coordinator cannot be reached (it then reconnects by itself). */
function registerServiceWorker(keep) {
  if (!("serviceWorker" in navigator) || params.get("sw") === "off") return;
  navigator.serviceWorker.register("/sw.js").catch((err) => console.warn("service worker not registered:", err));
  navigator.serviceWorker.ready.then((reg) => reg.active?.postMessage({ type: "keep", urls: keep })).catch(() => {});
}

/** The demo shard, retried until the coordinator answers (it may be restarting). */
async function fetchShard(url) {
  for (let attempt = 1; ; attempt++) {
    try {
      const r = await fetch(url);
      if (r.ok) return await r.json();
      if (r.status >= 400 && r.status < 500 && r.status !== 429) throw Object.assign(new Error(`shard: HTTP ${r.status} ${await r.text()}`), { fatal: true });
    } catch (err) {
      if (err.fatal) throw err;
    }
    await new Promise((resolve) => setTimeout(resolve, Math.min(10000, 500 * 2 ** attempt)));
  }
}

// ── join ──────────────────────────────────────────────────────────────────────────────────────────────
/** Let the browser run its pending tasks (input, rendering) before going on: no task of ours grows long. */
const nextTask = () => new Promise((resolve) => setTimeout(resolve, 0));

async function main() {
  demo.startedAt = performance.now(); // the page's own work starts here (after its first parse and layout)
  clearPad(); // (the first use of a canvas sets up its backing store)
  await nextTask();
  const identity = params.get("identity") ?? "demo";
  const shard = pickShard(identity);
  const partition = params.get("partition") ?? "dirichlet:0.5";
  $("shard").textContent = `${shard.i} / ${shard.n}`;
  const privacy = privacyFromUrl();
  demo.privacyOptions = privacy;
  showPolicy({ ...DEFAULT_POLICY, ...privacy }, privacy);
  await nextTask();
  setStatus("loading Pyodide, libsodium, the WASM kernel and the Python client core…");
  const shardUrl = `/demo/shard?i=${shard.i}&n=${shard.n}&partition=${encodeURIComponent(partition)}`;
  registerServiceWorker([shardUrl]);
  const dataP = fetchShard(shardUrl);
  await nextTask();
  const client = await connect(location.origin, {
    persist: identity !== "ephemeral", identityName: identity, privacy,
    onEvent: (ev) => {
      if (ev.type === "loading") showLoading(ev);
      if (!(ev.type === "loading" && ev.stage === "download")) demo.events.push(ev);
    },
  });
  const data = await dataP;
  await client.setData(base64ToFloat32(data.x), Int32Array.from(data.y));
  $("shard-sub").textContent = `${data.count} digits, ${data.partition}`;
  $("ident").innerHTML = `client id <code>${client.clientId}</code>`;
  demo.client = client;
  if (client.modelRound !== null && client.modelRound !== undefined) { // kept from an earlier visit (IndexedDB)
    demo.modelRound = client.modelRound;
    $("prediction-sub").textContent = `draw 0–9: global model after round ${client.modelRound} (kept from your last visit)`;
    log(`restored the global model after round ${client.modelRound} (signature verified)`);
  }
  client.addEventListener("model", (e) => { demo.modelRound = e.detail.round; });
  DEFAULT_POLICY = client.defaultPolicy;
  demo.policy = client.policy; // what the Python session enforces (the URL's values over the defaults)
  showPolicy(demo.policy, privacy);
  showLedger(client.ledger); // restored from IndexedDB with the identity
  client.addEventListener("connecting", (e) => setStatus(e.detail.attempt > 1 ? `reconnecting (attempt ${e.detail.attempt})…` : "connecting…"));
  client.addEventListener("connected", (e) => {
    setStatus("connected – waiting to be selected for a round");
    log(`connected as ${e.detail.clientId.slice(0, 12)}…, coordinator key ${e.detail.coordinatorKey.slice(0, 12)}… ${e.detail.firstUse ? "(first use: pinned now)" : "(matches the pinned key)"}`);
  });
  client.addEventListener("round-start", (e) => {
    demo.modelRound = e.detail.round - 1;
    setStatus(`round ${e.detail.round}: training on ${e.detail.examples} local digits`);
    log(`round ${e.detail.round}: selected – training on ${e.detail.examples} local digits`);
  });
  client.addEventListener("trained", (e) => {
    const seconds = e.detail.seconds; // measured in the worker: the local training and the masking after it
    demo.trainSeconds.push(seconds);
    $("loss").textContent = e.detail.loss.toFixed(3);
    $("loss-sub").textContent = `round ${e.detail.round}: local round ${seconds < 0.1 ? `${(1000 * seconds).toFixed(0)} ms`
      : `${seconds.toFixed(2)} s`} (stays in this tab)`;
    demo.losses[e.detail.round] = e.detail.loss;
    setStatus(`round ${e.detail.round}: secure aggregation`);
    predictDrawing();
  });
  client.addEventListener("ledger", (e) => {
    showLedger(e.detail);
    setStatus(`round ${e.detail.round}: ledger ${e.detail.persisted ? "stored" : "updated"} – masked update sent`);
    log(`round ${e.detail.round}: ledger ε = ${fmtEps(e.detail.epsilon)} (worst case ${fmtEps(e.detail.epsilonWorstCase)}), ${e.detail.participations} rounds`);
  });
  client.addEventListener("declined", (e) => {
    const text = showDecline(e.detail);
    setStatus(text, "error");
    log(text);
  });
  client.addEventListener("round-done", (e) => {
    if (e.detail.declined) { log(`round ${e.detail.round}: ended (${e.detail.status}) without this tab`); return; }
    log(`round ${e.detail.round}: ${e.detail.status}`);
    showRound(e.detail.round);
    setStatus(`round ${e.detail.round} done (${e.detail.status}) – ready for the next`);
  });
  client.addEventListener("status", (e) => showStatus(e.detail));
  client.addEventListener("disconnected", (e) => { setStatus(`connection lost (${e.detail.code}); retrying in ${(e.detail.retryInMs / 1000).toFixed(1)} s`, "error"); log("disconnected"); });
  client.addEventListener("error", (e) => log(`error ${e.detail.code}: ${e.detail.message}`));
  client.addEventListener("stopped", (e) => {
    setStatus(`federation over: ${e.detail.reason}`, "done");
    log(`stopped: ${e.detail.reason}`);
    $("round-sub").textContent = e.detail.reason === "left" ? "left" : "finished";
  });
  window.dispatchEvent(new CustomEvent("fl-demo-client", { detail: client }));
  demo.summary = await client.participate();
}

// after the first render, in a task of its own: the page's first layout and this module's evaluation stay short
// (the page must never hold the main thread for more than 50 ms – tests/test_browser_loading.py)
setTimeout(() => main().catch((err) => {
  demo.error = String(err);
  setStatus(`error: ${err.message ?? err}`, "error");
  console.error(err);
}), 0);
