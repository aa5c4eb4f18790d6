// fl-client.js – the browser SDK of fl-coordinator (ES module). See docs/browser-sdk.md.
//
//   import { connect } from "/sdk/sdk/fl-client.js";
//   const fl = await connect("http://127.0.0.1:8765/", { data: { x: Float32Array, y: Int32Array } });
//   fl.addEventListener("round-done", (e) => console.log(e.detail));
//   const summary = await fl.participate();   // until the coordinator says stop (or fl.leave())
//   const classes = fl.predict(xFloat32Array);
//
// The WebSocket lives here; every frame goes through the Python client session (flcore.session, the same file a
// native client runs) in Pyodide: client_pyodide.client.BrowserClient. Training runs on the WASM kernel, crypto
// on libsodium-wrappers. The page must have the import map for "pyodide", "libsodium-wrappers" and "libsodium"
// (see client_web/demo/index.html).
//
// Privacy: the session enforces the client's own policy (options.privacy; safe defaults) and keeps its privacy
// ledger, which this file stores in IndexedDB with the identity. Frames from the coordinator are handled one at
// a time; when the session records a participation ("ledger" event) the masked input it accounts for is withheld
// by the Python side until the ledger is stored (awaited IndexedDB write) and ledger_persisted() releases it.
import { loadRuntime } from "../js/runtime.js";

/** Close codes / error codes after which reconnecting cannot help (docs/protocol.md § 6). */
// "enrolment": the coordinator does not admit this key (allow-list, or no valid enrolment token); its rate limit
// on new identities ("enrolment_busy") is retried like a lost connection
const FATAL = new Set(["handshake", "identity", "version", "banned", "no_data", "ledger", "enrolment"]);
const DB_NAME = "fl-coordinator-sdk";
const DB_STORE = "identities";

// ── IndexedDB: {seed, coordinatorKey, ledger} per coordinator origin (and identity name) ───────────────────
function idbOpen() {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(DB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(DB_STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

async function idbGet(key) {
  const db = await idbOpen();
  try {
    return await new Promise((resolve, reject) => {
      const req = db.transaction(DB_STORE, "readonly").objectStore(DB_STORE).get(key);
      req.onsuccess = () => resolve(req.result);
      req.onerror = () => reject(req.error);
    });
  } finally {
    db.close();
  }
}

async function idbPut(key, value) {
  const db = await idbOpen();
  try {
    await new Promise((resolve, reject) => {
      const tx = db.transaction(DB_STORE, "readwrite");
      tx.objectStore(DB_STORE).put(value, key);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
  } finally {
    db.close();
  }
}

/**
 * Remove the stored identity for a coordinator: the seed, the pinned coordinator key and the privacy ledger (the
 * ledger belongs to the identity: it accounts for what this client id has released). The next connect() makes a
 * new identity with an empty ledger.
 */
export async function forgetIdentity(url, identityName = "default") {
  const { origin } = endpoints(url);
  const db = await idbOpen();
  try {
    await new Promise((resolve, reject) => {
      const tx = db.transaction(DB_STORE, "readwrite");
      tx.objectStore(DB_STORE).delete(`${origin}#${identityName}`);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
      tx.onabort = () => reject(tx.error ?? new Error("IndexedDB transaction aborted"));
    });
  } finally {
    db.close();
  }
}

/**
 * One identity per tab: claim the Web Lock of slot `base`, else `base~2`, `base~3`, … (held for the page's
 * lifetime), so two tabs of one browser never run the same client id (they would keep replacing each other's
 * connection at the coordinator).
 */
async function claimIdentitySlot(origin, base) {
  if (!globalThis.navigator?.locks) return base;
  for (let k = 1; k <= 64; k++) {
    const name = k === 1 ? base : `${base}~${k}`;
    const got = await new Promise((resolve) => {
      navigator.locks.request(`${DB_NAME}:${origin}#${name}`, { ifAvailable: true }, (lock) => {
        resolve(Boolean(lock));
        return lock ? new Promise(() => {}) : undefined; // never released while the page lives
      });
    });
    if (got) return name;
  }
  throw new Error("fl-client: 64 tabs already hold this coordinator's identities");
}

// ── helpers ───────────────────────────────────────────────────────────────────────────────────────────────
function hexToBytes(hex) {
  if (typeof hex !== "string" || !/^([0-9a-f]{2})*$/i.test(hex)) throw new TypeError("expected a hex string");
  return Uint8Array.from(hex.match(/../g) ?? [], (b) => parseInt(b, 16));
}

function bytesToHex(bytes) {
  return Array.from(bytes, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** http(s) base, ws(s) URL of /ws and the origin of a coordinator given as http(s)://… or ws(s)://…[/ws]. */
function endpoints(url) {
  const u = new URL(url ?? location.href, location.href);
  const secure = u.protocol === "https:" || u.protocol === "wss:";
  const host = u.host;
  return {
    http: `${secure ? "https" : "http"}://${host}/`,
    ws: `${secure ? "wss" : "ws"}://${host}/ws`,
    origin: `${secure ? "https" : "http"}://${host}`,
  };
}

function flatFloat32(x) {
  if (x instanceof Float32Array) return x;
  if (ArrayBuffer.isView(x) || Array.isArray(x)) return Float32Array.from(Array.isArray(x) ? x.flat(Infinity) : x);
  throw new TypeError("x: expected a Float32Array or (nested) arrays of numbers");
}

function pyCall(obj, name, ...args) {
  // call a Python method, convert its result to JS, free the proxies
  const method = obj[name];
  let r;
  try {
    r = method(...args);
  } finally {
    method.destroy?.();
  }
  if (r === undefined || r === null || typeof r !== "object" || typeof r.toJs !== "function") return r;
  try {
    return r.toJs({ dict_converter: Object.fromEntries });
  } finally {
    r.destroy();
  }
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function sdkError(code, message) {
  const err = new Error(`fl-client: ${code}: ${message}`);
  err.code = code;
  return err;
}

/** The last line of a Pyodide PythonError ("ValueError: …"), without the traceback. */
function pythonMessage(err) {
  const lines = String(err?.message ?? err).trim().split("\n");
  return lines[lines.length - 1];
}

// ── privacy policy (options.privacy ↔ flcore.policy.PrivacyPolicy) and ledger summaries ───────────────────
const PRIVACY_OPTIONS = {
  minGroupSize: "min_group_size", thresholdRule: "threshold_rule", colluders: "colluders",
  allowSparseGraph: "allow_sparse_graph", minNoise: "min_noise_multiplier", epsilonBudget: "epsilon_budget",
  delta: "delta", maxAbortedReveals: "max_aborted_reveals",
};

/** options.privacy → the PrivacyPolicy dict (null: the defaults). Unknown options are an error (a typo must not
 * silently leave a default in place); epsilonBudget null or Infinity = no budget. */
function policyDict(privacy) {
  if (privacy === undefined || privacy === null) return null;
  if (typeof privacy !== "object" || Array.isArray(privacy)) throw sdkError("policy", "options.privacy must be an object");
  const out = {};
  for (const [k, v] of Object.entries(privacy)) {
    if (v === undefined) continue;
    const key = PRIVACY_OPTIONS[k];
    if (!key) throw sdkError("policy", `unknown privacy option ${JSON.stringify(k)} (known: ${Object.keys(PRIVACY_OPTIONS).join(", ")})`);
    out[key] = k === "epsilonBudget" && (v === null || v === Infinity) ? null : v;
  }
  return out;
}

/** The PrivacyPolicy dict → the SDK's names (epsilonBudget null = no budget). */
function policyFromPython(d) {
  const out = {};
  for (const [k, key] of Object.entries(PRIVACY_OPTIONS)) out[k] = d[key] ?? null;
  return out;
}

/** PrivacyLedger.summary() → {epsilon, epsilonWorstCase, participations, budget, delta, private, lastRound}. */
function ledgerFromPython(s) {
  return { epsilon: s.epsilon ?? null, epsilonWorstCase: s.epsilon_worst_case ?? null,
           participations: s.participations, budget: s.budget ?? null, delta: s.delta,
           private: Boolean(s.private), lastRound: s.last_round ?? null };
}

/**
 * A federated client bound to one coordinator. Emits (EventTarget, `event.detail`):
 * "loading" {stage, ms}, "connecting" {attempt, url}, "connected" {clientId, coordinatorKey, firstUse},
 * "disconnected" {code, reason, retryInMs}, "round-start" {round, examples}, "trained" {round, loss},
 * "ledger" {round, epsilon, epsilonWorstCase, participations, budget, delta, private, lastRound, persisted},
 * "declined" {round, code, message}, "round-done" {round, status, declined},
 * "status" {round, rounds, accuracy, loss, epsilon, …}, "stopped" {reason}, "error" {code, message, fatal};
 * and "event" with every one of them ({type, …}).
 */
export class FlClient extends EventTarget {
  constructor(rt, py, ep, options, identity) {
    super();
    this.runtime = rt;
    this._py = py; // client_pyodide.client.BrowserClient
    this._ep = ep;
    this._options = options;
    this._identity = identity; // {key, record}
    this._ws = null;
    this._participation = null;
    this._leaving = false;
    this._statusTimer = null;
    this._writes = Promise.resolve(); // IndexedDB writes of the identity record, one after the other
    this.summary = null;
    this.lastStatus = null;
  }

  /** The privacy policy this client enforces: {minGroupSize, thresholdRule, colluders, allowSparseGraph,
   * minNoise, epsilonBudget (null: none), delta, maxAbortedReveals}. */
  get policy() {
    return policyFromPython(pyCall(this._py, "policy"));
  }

  /** The SDK's default policy (flcore.policy.PrivacyPolicy()), same shape as `policy`. */
  get defaultPolicy() {
    return policyFromPython(pyCall(this._py, "default_policy"));
  }

  /** This client's privacy ledger: {epsilon (if secure aggregation holds), epsilonWorstCase (if it is broken:
   * own noise share only), participations, budget (null: none), delta, private, lastRound}. */
  get ledger() {
    return ledgerFromPython(pyCall(this._py, "ledger_summary"));
  }

  /** The whole ledger as stored (PrivacyLedger.to_dict(): {version, epsilon_budget, delta, entries}). */
  get ledgerState() {
    return JSON.parse(pyCall(this._py, "ledger_state_json"));
  }

  /** This client's id (hex BLAKE2b-128 of its Ed25519 public key) – stable across visits with IndexedDB. */
  get clientId() {
    return this._py.client_id;
  }

  /** This client's Ed25519 public key (hex): what an operator allow-lists or issues an enrolment token for. */
  get publicKey() {
    return this._py.public_key_hex;
  }

  /** The coordinator's public key this client trusts (hex), or null before the first handshake (TOFU). */
  get coordinatorKey() {
    return this._py.coordinator_key ?? null;
  }

  /** Coordinator URLs: {http, ws, origin}. */
  get endpoints() {
    return { ...this._ep };
  }

  /** Local training data: x flat row-major float32 (examples × features), y integer labels. */
  setData(x, y) {
    const xs = flatFloat32(x);
    const ys = y instanceof Int32Array ? y : Int32Array.from(y);
    if (!ys.length || xs.length % ys.length !== 0) throw new RangeError("x must hold examples × features values for y's examples");
    pyCall(this._py, "set_data", xs, ys);
    this.examples = ys.length;
  }

  /** Class predictions of the latest global model received (x as for setData); throws before the first round. */
  predict(x) {
    const out = pyCall(this._py, "predict", flatFloat32(x));
    return Int32Array.from(out);
  }

  /** Debugging/tests: the field vector fed into the last secure aggregation ({round, modulus_bits, values}). */
  debugLastInput() {
    return pyCall(this._py, "last_input") ?? null;
  }

  /** Debugging/tests: what a protocol frame is, unverified: {type, round, sender, phase} (phase: SecAgg+ only). */
  debugDescribeFrame(frame) {
    const d = pyCall(this._py, "describe_frame", frame instanceof Uint8Array ? frame : new Uint8Array(frame));
    return { type: d.type, round: d.round, sender: d.sender, phase: d.phase ?? null };
  }

  _emit(type, detail = {}) {
    const ev = { type, ...detail };
    if (this._options.onEvent) {
      try {
        this._options.onEvent(ev);
      } catch (err) {
        console.error("fl-client onEvent:", err);
      }
    }
    this.dispatchEvent(new CustomEvent(type, { detail }));
    this.dispatchEvent(new CustomEvent("event", { detail: ev }));
  }

  /**
   * Join rounds until the coordinator says stop (or leave() is called). Resolves with a summary
   * {clientId, rounds, failedRounds, lastLoss, stopReason, reconnects, errors}; rejects on a fatal error.
   */
  participate() {
    if (this._participation) return this._participation;
    if (!this.examples) return Promise.reject(new Error("participate(): call setData() (or pass options.data) first"));
    this._leaving = false;
    this.summary = { clientId: this.clientId, rounds: [], failedRounds: [], declined: [], lastLoss: null,
                     stopReason: null, reconnects: 0, errors: [], ledger: this.ledger };
    const onPageHide = () => this._byeNow("page closed");
    const pageScope = typeof globalThis.addEventListener === "function" && this._options.leaveOnPageHide !== false;
    if (pageScope) globalThis.addEventListener("pagehide", onPageHide);
    this._participation = this._loop().finally(() => {
      if (pageScope) globalThis.removeEventListener("pagehide", onPageHide);
      this._stopStatusPolling();
      this._participation = null;
      // once more (and again after the public view's 1 s cache): the page shows the federation's final figures,
      // not those of a round ago
      this._pollStatus();
      setTimeout(() => this._pollStatus(), 1500);
    });
    return this._participation;
  }

  /** Synchronous bye + close, for pagehide: the page may be gone before any promise settles. The coordinator
   * treats the closed connection of a selected client as an immediate dropout, so a closed or reloaded tab
   * costs the others milliseconds, not a phase deadline. */
  _byeNow(reason) {
    const ws = this._ws;
    this._leaving = true;
    this._leaveReason = "left";
    if (ws && ws.readyState === WebSocket.OPEN) {
      try {
        for (const f of pyCall(this._py, "leave", reason)) ws.send(f);
      } finally {
        ws.close(1001, "bye");
      }
    }
  }

  /** Say bye and close the connection; participate() then resolves with stopReason "left". */
  async leave(reason = "left") {
    this._leaving = true;
    this._leaveReason = reason;
    const ws = this._ws;
    if (ws && ws.readyState === WebSocket.OPEN) {
      for (const f of pyCall(this._py, "leave", reason)) ws.send(f);
      ws.close(1000, "bye");
    }
    if (this._wake) this._wake();
    if (this._participation) await this._participation.catch(() => {});
  }

  async _loop() {
    const o = this._options;
    const initial = o.reconnect?.initialMs ?? 500;
    const max = o.reconnect?.maxMs ?? 10000;
    let delay = initial;
    this._startStatusPolling();
    for (let attempt = 1; ; attempt++) {
      if (this._leaving) return this._finish(this._leaveReason ?? "left");
      const result = await this._session(attempt);
      if (result.authenticated) delay = initial; // the connection worked: start over with short waits
      if (result.stopped) return this._finish(result.stopped);
      if (result.fatal) {
        this.summary.stopReason = `error: ${result.fatal.code}`;
        throw sdkError(result.fatal.code, result.fatal.message);
      }
      if (this._leaving) return this._finish(this._leaveReason ?? "left");
      const wait = Math.round(delay * (0.5 + Math.random()));
      this._emit("disconnected", { code: result.code, reason: result.reason, retryInMs: wait });
      this.summary.reconnects++;
      await new Promise((resolve) => {
        const timer = setTimeout(resolve, wait);
        const online = () => resolve();
        this._wake = () => { clearTimeout(timer); resolve(); };
        globalThis.addEventListener?.("online", online, { once: true });
      });
      this._wake = null;
      delay = Math.min(max, delay * 2);
    }
  }

  _finish(reason) {
    this.summary.stopReason = reason;
    this._emit("stopped", { reason });
    this._pollStatus();
    return this.summary;
  }

  /** One WebSocket connection: resolves when it closes (and its last frame is handled) with {authenticated,
   * stopped?, fatal?, code, reason}. Frames are handled one at a time, in order: a ledger write is awaited
   * before the frames behind it are sent, and no later frame overtakes it. */
  _session(attempt) {
    return new Promise((resolve) => {
      const out = { authenticated: false, stopped: null, fatal: null, code: 0, reason: "" };
      let ws;
      this._emit("connecting", { attempt, url: this._ep.ws });
      try {
        ws = new WebSocket(this._ep.ws);
      } catch (err) {
        out.reason = String(err);
        resolve(out);
        return;
      }
      ws.binaryType = "arraybuffer";
      this._ws = ws;
      const send = (frames) => {
        for (const f of frames) if (ws.readyState === WebSocket.OPEN) ws.send(f);
      };
      let queue = Promise.resolve();
      ws.onopen = () => send(pyCall(this._py, "start"));
      ws.onmessage = (e) => {
        if (!(e.data instanceof ArrayBuffer)) return; // the coordinator only sends binary frames
        const data = new Uint8Array(e.data);
        queue = queue.then(() => this._onFrame(data, out, ws, send)).catch((err) => {
          this._emit("error", { code: "internal", message: String(err), fatal: false });
        });
      };
      ws.onerror = () => {}; // followed by onclose
      ws.onclose = (e) => {
        out.code = e.code;
        out.reason = e.reason;
        if (this._ws === ws) this._ws = null;
        queue.then(() => resolve(out));
      };
    });
  }

  /** One frame from the coordinator: the frames the session may send now go out, then its events in order; a
   * "ledger" event is stored (awaited) before the frames withheld behind it are released and sent. */
  async _onFrame(data, out, ws, send) {
    let frames;
    try {
      frames = pyCall(this._py, "receive", data);
    } catch (err) {
      this._emit("error", { code: "internal", message: pythonMessage(err), fatal: false });
      return;
    }
    send(frames);
    for (const ev of pyCall(this._py, "take_events")) {
      if (ev.type === "ledger") await this._onLedger(ev, out, ws, send);
      else this._onPythonEvent(ev, out, ws);
    }
  }

  async _onLedger(ev, out, ws, send) {
    const state = JSON.parse(ev.state_json);
    let persisted;
    try {
      persisted = await this._saveLedger(state);
    } catch (err) {
      // not durable: the masked input it accounts for is never sent (the round sees a dropout), and we stop
      const message = `could not store the privacy ledger (${err?.message ?? err}); the masked update was not sent`;
      this.summary.errors.push("ledger");
      this._emit("error", { code: "ledger", message, fatal: true });
      out.fatal = { code: "ledger", message };
      ws.close(1000, "fatal error");
      return;
    }
    const detail = { round: ev.round, ...ledgerFromPython(ev.summary), persisted };
    this.summary.ledger = ledgerFromPython(ev.summary);
    this._emit("ledger", detail);
    send(pyCall(this._py, "ledger_persisted"));
  }

  /** Store the ledger with the identity (awaited); false when this client is not persisted (memory only). */
  async _saveLedger(state) {
    const id = this._identity;
    if (!id.key) return false;
    id.record = { ...id.record, ledger: state, clientId: this.clientId };
    await this._writeRecord();
    return true;
  }

  /** Write the identity record as it is when the write starts; writes never overtake each other. */
  _writeRecord() {
    const id = this._identity;
    const write = this._writes.then(() => idbPut(id.key, id.record));
    this._writes = write.catch(() => {});
    return write;
  }

  _onPythonEvent(ev, out, ws) {
    switch (ev.type) {
      case "connected":
      {
        out.authenticated = true;
        const known = this._identity.record?.coordinatorKey === ev.coordinator_key || Boolean(this._options.coordinatorKey);
        this._pinKey(ev.coordinator_key);
        this._emit("connected", { clientId: ev.client_id, coordinatorKey: ev.coordinator_key, firstUse: !known });
        break;
      }
      case "train":
        this._emit("round-start", { round: ev.round, examples: ev.examples });
        break;
      case "model": {
        // the global model of this round, signed by the pinned coordinator: kept with the identity so that the
        // page can still classify after the federation ends and after a reload (verified again when restored)
        this.modelRound = ev.round;
        const id = this._identity;
        if (id.key) {
          const file = pyCall(this._py, "model_file");
          id.record = { ...id.record, model: { round: ev.round, file } };
          this._writeRecord().catch((err) => console.warn("fl-client: could not keep the global model:", err));
        }
        this._emit("model", { round: ev.round, restored: false });
        break;
      }
      case "trained":
        this.summary.lastLoss = ev.loss;
        this._emit("trained", { round: ev.round, loss: ev.loss });
        break;
      case "round_done":
        if (!ev.declined) (ev.status === "ok" ? this.summary.rounds : this.summary.failedRounds).push(ev.round);
        this._emit("round-done", { round: ev.round, status: ev.status, declined: Boolean(ev.declined) });
        this._pollStatus();
        break;
      case "declined":
        // the client's policy or privacy budget refused the task: a decline frame went out, nothing else
        this.summary.declined.push({ round: ev.round, code: ev.code });
        this._emit("declined", { round: ev.round, code: ev.code, message: ev.message });
        break;
      case "stopped":
        out.stopped = ev.reason;
        ws.close(1000, "stopped");
        break;
      case "failed": {
        const fatal = FATAL.has(ev.code);
        this.summary.errors.push(ev.code);
        this._emit("error", { code: ev.code, message: ev.message, fatal });
        if (fatal) {
          out.fatal = { code: ev.code, message: ev.message };
          ws.close(1000, "fatal error");
        }
        break;
      }
      default:
        this._emit(ev.type, ev);
    }
  }

  _pinKey(hex) {
    const id = this._identity;
    if (!id.key || !hex || id.record?.coordinatorKey === hex) return;
    id.record = { ...id.record, coordinatorKey: hex, clientId: this.clientId };
    this._writeRecord().catch((err) => console.warn("fl-client: could not persist the coordinator key:", err));
  }

  _startStatusPolling() {
    const every = this._options.statusIntervalMs ?? 3000;
    if (every > 0 && !this._statusTimer) this._statusTimer = setInterval(() => this._pollStatus(), every);
  }

  _stopStatusPolling() {
    if (this._statusTimer) clearInterval(this._statusTimer);
    this._statusTimer = null;
  }

  /** Fetch /status and emit "status" with the global model's metrics (when the coordinator evaluates). */
  async _pollStatus() {
    try {
      const r = await fetch(new URL("status", this._ep.http), { cache: "no-store" });
      if (!r.ok) return;
      const s = await r.json();
      const m = s.metrics ?? {};
      const p = s.privacy ?? {};
      const detail = { round: s.round, rounds: s.rounds, finished: s.finished, accuracy: m.accuracy ?? null,
                       loss: m.loss ?? null, epsilon: p.epsilon ?? null, delta: p.delta ?? null,
                       epsilonBudget: p.epsilon_budget ?? null, noiseMultiplier: p.noise_multiplier ?? null,
                       groupSize: p.group_size ?? s.group_size ?? null, thresholdRule: p.threshold_rule ?? null,
                       colluders: p.colluders ?? null, connected: s.connected, ready: s.ready ?? null,
                       clientsPerRound: s.clients_per_round ?? null,
                       minClientsPerRound: s.min_clients_per_round ?? s.clients_per_round ?? null,
                       inProgress: s.round_in_progress };
      const prev = this.lastStatus;
      this.lastStatus = detail;
      if (!prev || prev.round !== detail.round || prev.connected !== detail.connected || prev.ready !== detail.ready ||
          prev.finished !== detail.finished || JSON.stringify(prev.inProgress) !== JSON.stringify(detail.inProgress)) {
        this._emit("status", detail);
      }
    } catch {
      // the coordinator is unreachable: the WebSocket side reports it
    }
  }
}

/**
 * Load the runtime (Pyodide + our Python client core + the WASM kernel + libsodium), restore or create this
 * browser's identity for the coordinator at `url` (IndexedDB), and return an FlClient. No connection is opened
 * before participate().
 *
 * options: data {x, y} · persist (default true: IndexedDB) · identityName (default "default"; a tab takes the
 *   first free slot of it – "NAME", "NAME~2", … – so two tabs never share an identity) ·
 *   identitySeed (Uint8Array(32), overrides storage) · coordinatorKey (hex; overrides the pinned one) ·
 *   enrolmentToken (hex, from `fl-coordinator enrol-token`; for a coordinator that admits only those) ·
 *   privacy {minGroupSize, thresholdRule, colluders, allowSparseGraph, minNoise, epsilonBudget, delta,
 *   maxAbortedReveals} (the client's privacy policy; omitted ones keep the safe defaults) ·
 *   pythonUrl (default `${url}/py/`) · runtime (an already loaded runtime to reuse) · maxBatch (64) ·
 *   reconnect {initialMs: 500, maxMs: 10000} · statusIntervalMs (3000; 0 = only after rounds) · onEvent(ev)
 */
export async function connect(url, options = {}) {
  const ep = endpoints(url);
  const policy = policyDict(options.privacy); // before the runtime loads: a typo fails fast
  const early = [];
  const onProgress = ({ stage, ms }) => {
    const ev = { type: "loading", stage, ms };
    early.push(ev);
    if (options.onEvent) options.onEvent(ev);
  };
  const rt = options.runtime ?? await loadRuntime({ pythonUrl: options.pythonUrl ?? new URL("py/", ep.http).href, onProgress });

  // identity: the 32-byte Ed25519 seed and the pinned coordinator key, per coordinator origin
  const persist = (options.persist ?? true) && !options.identitySeed;
  const identityName = persist ? await claimIdentitySlot(ep.origin, options.identityName ?? "default") : null;
  const key = persist ? `${ep.origin}#${identityName}` : null;
  let record = null;
  if (options.identitySeed) {
    record = { seed: new Uint8Array(options.identitySeed), coordinatorKey: null };
  } else if (key) {
    try {
      record = (await idbGet(key)) ?? null;
    } catch (err) {
      console.warn("fl-client: IndexedDB unavailable, using a fresh identity:", err);
    }
  }
  if (!record || !(record.seed instanceof Uint8Array) || record.seed.length !== 32) {
    record = { seed: crypto.getRandomValues(new Uint8Array(32)), coordinatorKey: null, created: Date.now() };
    if (key) await idbPut(key, record).catch((err) => console.warn("fl-client: could not persist the identity:", err));
  }
  const pinned = options.coordinatorKey ?? record.coordinatorKey ?? null;
  const { BrowserClient } = rt.pyodide.pyimport("client_pyodide.client");
  let py;
  try {
    // policy and ledger cross as JSON text (a JS null would reach Python as JsNull, not None)
    py = BrowserClient.callKwargs({ identity_seed: record.seed, coordinator_key: pinned ? hexToBytes(pinned) : null,
                                    max_batch: options.maxBatch ?? 64,
                                    policy: policy ? JSON.stringify(policy) : null,
                                    ledger: record.ledger ? JSON.stringify(record.ledger) : null,
                                    enrolment_token: options.enrolmentToken ?? null });
  } catch (err) {
    const message = pythonMessage(err);
    // a stored ledger is never reset silently: forgetting releases would let this identity overspend its budget
    if (/invalid privacy ledger/.test(message)) {
      throw sdkError("ledger", `${message} (stored for ${key}; forgetIdentity() deletes the identity and its ledger)`);
    }
    throw sdkError(/invalid privacy policy/.test(message) ? "policy" : "internal", message);
  }
  const client = new FlClient(rt, py, ep, options, { key, record });
  client.identityName = identityName;
  client.modelRound = null;
  if (record.model?.file && pinned) {
    try { // the last global model this identity received: usable at once, before (or without) any round
      client.modelRound = pyCall(py, "load_model", record.model.file);
      early.push({ type: "model", round: client.modelRound, restored: true });
    } catch (err) {
      console.warn("fl-client: the stored global model was not restored:", err);
    }
  }
  if (options.data) client.setData(options.data.x, options.data.y);
  client.loading = early;
  return client;
}

export { bytesToHex, endpoints, sleep };
