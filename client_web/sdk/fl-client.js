// fl-client.js – the browser SDK of fl-coordinator (ES module). See docs/browser-sdk.md.
//
//   import { connect } from "/sdk/sdk/fl-client.js";
//   const fl = await connect("http://127.0.0.1:8765/", { data: { x: Float32Array, y: Int32Array } });
//   fl.addEventListener("round-done", (e) => console.log(e.detail));
//   const summary = await fl.participate();   // until the coordinator says stop (or fl.leave())
//   const classes = fl.predict(xFloat32Array);
//
// The WebSocket, IndexedDB and the events live here, on the page; every frame goes through the Python client
// session (flcore.session, the same file a native client runs) in Pyodide, which runs in a module worker
// (./fl-worker.js: Pyodide, client_pyodide.client.BrowserClient, the WASM kernel, libsodium-wrappers) so that the
// page never blocks on Python – not while loading, not while training. The worker downloads the runtime's large
// files itself from the content-hashed URLs of /sdk/assets.json (progress, resume, SHA-256 check, Cache Storage);
// a load that fails or stops making progress is retried in a fresh worker (options.loadTimeouts). No import map
// is needed.
//
// Privacy: the session enforces the client's own policy (options.privacy; safe defaults) and keeps its privacy
// ledger, which this file stores in IndexedDB with the identity. Frames from the coordinator are handled one at
// a time; when the session records a participation ("ledger" event) the masked input it accounts for is withheld
// by the Python side until the ledger is stored (awaited IndexedDB write) and ledger_persisted() releases it.

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

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));

function sdkError(code, message) {
  const err = new Error(`fl-client: ${code}: ${message}`);
  err.code = code;
  return err;
}

// ── the worker (Pyodide + the Python sessions) ──────────────────────────────────────────────────────────
/** Default seconds without progress before a loading stage is given up and retried in a fresh worker. */
const LOAD_TIMEOUTS = { assets: 30000, download: 30000, pyodide: 180000, "python-files": 60000 };

/** The worker: requests and their answers (by id), loading progress. One worker may hold several clients. */
export class WorkerRuntime {
  constructor(workerUrl) {
    this.worker = makeWorker(workerUrl);
    this._pending = new Map();
    this._next = 1;
    this.onProgress = null;
    this.timings = null;
    this.worker.onmessage = (e) => {
      const m = e.data;
      if (m.progress) {
        this.onProgress?.(m.progress);
        return;
      }
      const p = this._pending.get(m.id);
      if (!p) return;
      this._pending.delete(m.id);
      if (m.ok) p.resolve(m);
      else p.reject(Object.assign(new Error(m.error.message), { python: m.error.python, stage: m.error.stage,
                                                                 fatal: m.error.fatal }));
    };
    this.worker.onerror = (e) => {
      e.preventDefault?.();
      this._failAll(new Error(`worker: ${e.message ?? "failed to start"}`));
    };
    this.worker.onmessageerror = () => this._failAll(new Error("worker: message could not be decoded"));
  }

  _failAll(err) {
    for (const p of this._pending.values()) p.reject(err);
    this._pending.clear();
    this.onProgress?.({ stage: "worker-error", error: err.message });
  }

  /** Send {op, args}; resolves with {result, state}. */
  request(op, args = {}) {
    const id = this._next++;
    return new Promise((resolve, reject) => {
      this._pending.set(id, { resolve, reject });
      this.worker.postMessage({ id, op, args });
    });
  }

  terminate() {
    this.worker.terminate();
    this._failAll(new Error("worker terminated"));
  }

  /** Load the runtime in the worker: rejects when a stage makes no progress within its timeout. */
  load(args, timeouts, onProgress) {
    return new Promise((resolve, reject) => {
      let timer = null;
      const arm = (stage) => {
        clearTimeout(timer);
        timer = setTimeout(() => {
          const err = new Error(`no progress for ${timeouts[stage] / 1000} s while loading (${stage})`);
          err.stage = stage;
          reject(err);
        }, timeouts[stage]);
      };
      arm("assets");
      this.onProgress = (p) => {
        onProgress(p);
        if (p.stage === "download" || p.stage === "download-retry") {
          arm(p.stage === "download-retry" || p.loaded < p.total ? "download" : "pyodide");
        } else if (p.stage === "assets") {
          arm("download");
        } else if (p.stage === "pyodide") {
          arm("python-files");
        } else if (p.stage === "worker-error") {
          clearTimeout(timer);
        } else if (p.stage === "csp-violation") {
          clearTimeout(timer);
          const err = new Error(`blocked by the Content-Security-Policy (${p.directive}${p.blocked ? `: ${p.blocked}` : ""})`);
          err.fatal = true;
          reject(err);
        }
      };
      this.request("load", args).then((m) => {
        clearTimeout(timer);
        this.timings = m.result.timings;
        this.downloaded = m.result.downloaded;
        resolve(this);
      }, (err) => {
        clearTimeout(timer);
        reject(err);
      });
    });
  }
}

/** A module worker running ./fl-worker.js – also when this module comes from another origin (the coordinator's):
 * a worker's script must be same-origin, so it is then a blob: module that imports the real one (CORS). */
function makeWorker(workerUrl) {
  const url = new URL(workerUrl ?? "./fl-worker.js", import.meta.url);
  if (url.origin === location.origin) return new Worker(url, { type: "module" });
  const blob = new Blob([`import ${JSON.stringify(url.href)};`], { type: "text/javascript" });
  return new Worker(URL.createObjectURL(blob), { type: "module" });
}

/**
 * Start a worker and load the runtime in it, retrying in a fresh worker (waits 1, 2, 4 … 10 s) when a stage fails
 * or makes no progress within options.loadTimeouts; a file that does not match its hash, or a 4xx answer, is
 * not retried (fatal). onProgress gets {stage, ms, …} and {stage: "retry", attempt, error, retryInMs}.
 */
export async function loadWorkerRuntime(ep, options = {}, onProgress = () => {}) {
  const timeouts = { ...LOAD_TIMEOUTS, ...(options.loadTimeouts ?? {}) };
  const attempts = options.loadAttempts ?? Infinity;
  const args = { assetsUrl: options.assetsUrl ?? new URL("sdk/assets.json", ep.http).href,
                 pythonUrl: options.pythonUrl ?? new URL("py/", ep.http).href, stallMs: timeouts.download };
  for (let attempt = 1; ; attempt++) {
    const rt = new WorkerRuntime(options.workerUrl);
    try {
      return await rt.load(args, timeouts, onProgress);
    } catch (err) {
      rt.terminate();
      if (err.fatal || attempt >= attempts) throw sdkError("loading", err.message);
      const retryInMs = Math.min(10000, 1000 * 2 ** (attempt - 1));
      onProgress({ stage: "retry", attempt, error: err.message, retryInMs });
      await sleep(retryInMs);
    }
  }
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
 * "disconnected" {code, reason, retryInMs}, "round-start" {round, examples}, "trained" {round, loss, seconds},
 * "ledger" {round, epsilon, epsilonWorstCase, participations, budget, delta, private, lastRound, persisted},
 * "declined" {round, code, message}, "round-done" {round, status, declined},
 * "status" {round, rounds, accuracy, loss, epsilon, …}, "stopped" {reason}, "error" {code, message, fatal};
 * and "event" with every one of them ({type, …}).
 */
export class FlClient extends EventTarget {
  constructor(rt, created, ep, options, identity) {
    super();
    this.runtime = rt; // the WorkerRuntime: Pyodide and this client's BrowserClient live in its worker
    this._handle = created.handle;
    this._clientId = created.clientId;
    this._publicKey = created.publicKey;
    this._policy = created.policy;
    this._defaultPolicy = created.defaultPolicy;
    this._ledger = created.ledger;
    this._ledgerStateJson = created.ledgerState;
    this._coordinatorKey = null;
    this._bye = []; // a signed bye, refreshed after every frame: sent synchronously when the page goes away
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
    return policyFromPython(this._policy);
  }

  /** The SDK's default policy (flcore.policy.PrivacyPolicy()), same shape as `policy`. */
  get defaultPolicy() {
    return policyFromPython(this._defaultPolicy);
  }

  /** This client's privacy ledger: {epsilon (if secure aggregation holds), epsilonWorstCase (if it is broken:
   * own noise share only), participations, budget (null: none), delta, private, lastRound}. */
  get ledger() {
    return ledgerFromPython(this._ledger);
  }

  /** The whole ledger as stored (PrivacyLedger.to_dict(): {version, epsilon_budget, delta, entries}). */
  get ledgerState() {
    return JSON.parse(this._ledgerStateJson);
  }

  /** This client's id (hex BLAKE2b-128 of its Ed25519 public key) – stable across visits with IndexedDB. */
  get clientId() {
    return this._clientId;
  }

  /** This client's Ed25519 public key (hex): what an operator allow-lists or issues an enrolment token for. */
  get publicKey() {
    return this._publicKey;
  }

  /** The coordinator's public key this client trusts (hex), or null before the first handshake (TOFU). */
  get coordinatorKey() {
    return this._coordinatorKey ?? this._identity.record?.coordinatorKey ?? this._options.coordinatorKey ?? null;
  }

  /** A request about this client to the worker; keeps the state that comes with the answer (the coordinator
   * key in use, a fresh signed bye) and resolves with the result. */
  async _request(op, args = {}) {
    const m = await this.runtime.request(op, { handle: this._handle, ...args });
    if (m.state?.coordinatorKey) this._coordinatorKey = m.state.coordinatorKey;
    if (m.state?.bye) this._bye = m.state.bye;
    return m.result;
  }

  /** Call a BrowserClient method in the worker; resolves with its result (plain JS). */
  _call(method, ...args) {
    return this._request("call", { method, args });
  }

  /** Coordinator URLs: {http, ws, origin}. */
  get endpoints() {
    return { ...this._ep };
  }

  /** Local training data: x flat row-major float32 (examples × features), y integer labels. Resolves once the
   * worker holds them. */
  async setData(x, y) {
    const xs = flatFloat32(x);
    const ys = y instanceof Int32Array ? y : Int32Array.from(y);
    if (!ys.length || xs.length % ys.length !== 0) throw new RangeError("x must hold examples × features values for y's examples");
    await this._call("set_data", xs, ys);
    this.examples = ys.length;
  }

  /** Class predictions (Int32Array) of the latest global model received (x as for setData); rejects before the
   * first model. Runs in the worker: the page stays responsive. */
  async predict(x) {
    return Int32Array.from(await this._call("predict", flatFloat32(x)));
  }

  /** Debugging/tests: the field vector fed into the last secure aggregation ({round, modulus_bits, values}). */
  async debugLastInput() {
    return (await this._call("last_input")) ?? null;
  }

  /** Debugging/tests: what a protocol frame is, unverified: {type, round, sender, phase} (phase: SecAgg+ only). */
  async debugDescribeFrame(frame) {
    const d = await this._call("describe_frame", frame instanceof Uint8Array ? frame : new Uint8Array(frame));
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
  _byeNow() {
    const ws = this._ws;
    this._leaving = true;
    this._leaveReason = "left";
    if (ws && ws.readyState === WebSocket.OPEN) {
      try {
        for (const f of this._bye) ws.send(f); // signed in the worker after the last frame (no await possible here)
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
      const frames = await this._call("leave", reason).catch(() => []);
      if (ws.readyState === WebSocket.OPEN) {
        for (const f of frames) ws.send(f);
        ws.close(1000, "bye");
      }
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
      this._bye = [];
      ws.onopen = () => {
        queue = queue.then(async () => send((await this._request("start")).frames)).catch((err) => this._emit("error", { code: "internal", message: String(err?.message ?? err), fatal: false }));
      };
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
    const { frames, error, events } = await this._request("frame", { data });
    if (error) this._emit("error", { code: "internal", message: error, fatal: false });
    send(frames);
    for (const ev of events) {
      if (ev.type === "ledger") await this._onLedger(ev, out, ws, send);
      else await this._onPythonEvent(ev, out, ws);
    }
  }

  async _onLedger(ev, out, ws, send) {
    this._ledger = ev.summary; // what the session recorded, stored or not
    this._ledgerStateJson = ev.state_json;
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
    send(await this._call("ledger_persisted"));
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

  async _onPythonEvent(ev, out, ws) {
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
          const file = await this._call("model_file");
          id.record = { ...id.record, model: { round: ev.round, file } };
          this._writeRecord().catch((err) => console.warn("fl-client: could not keep the global model:", err));
        }
        this._emit("model", { round: ev.round, restored: false });
        break;
      }
      case "trained":
        this.summary.lastLoss = ev.loss;
        this._emit("trained", { round: ev.round, loss: ev.loss, seconds: ev.seconds ?? null });
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
 *   pythonUrl (default `${url}/py/`) · assetsUrl (default `${url}/sdk/assets.json`) · runtime (the `runtime` of
 *   another client: its worker holds this client too) · loadTimeouts {assets, download, pyodide, "python-files"}
 *   (ms without progress before a stage is retried in a fresh worker; LOAD_TIMEOUTS) · loadAttempts (∞) ·
 *   maxBatch (64) ·
 *   reconnect {initialMs: 500, maxMs: 10000} · statusIntervalMs (3000; 0 = only after rounds) · onEvent(ev)
 */
export async function connect(url, options = {}) {
  const ep = endpoints(url);
  const policy = policyDict(options.privacy); // before the runtime loads: a typo fails fast
  const early = [];
  const onProgress = (p) => {
    const ev = { type: "loading", ...p };
    if (p.stage !== "download") early.push(ev); // (download progress: many, and only useful live)
    if (options.onEvent) options.onEvent(ev);
  };
  // the worker loads while the identity is read from IndexedDB
  const rtP = options.runtime ? Promise.resolve(options.runtime) : loadWorkerRuntime(ep, options, onProgress);
  rtP.catch(() => {}); // (awaited below; an identity error must not leave it unhandled)

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
  const rt = await rtP;
  let created;
  try {
    // policy and ledger cross as JSON text (a JS null would reach Python as JsNull, not None)
    created = (await rt.request("create", { seed: record.seed, coordinatorKey: pinned ? hexToBytes(pinned) : null,
                                            maxBatch: options.maxBatch ?? 64,
                                            policy: policy ? JSON.stringify(policy) : null,
                                            ledger: record.ledger ? JSON.stringify(record.ledger) : null,
                                            enrolmentToken: options.enrolmentToken ?? null })).result;
  } catch (err) {
    const message = err.message;
    // a stored ledger is never reset silently: forgetting releases would let this identity overspend its budget
    if (/invalid privacy ledger/.test(message)) {
      throw sdkError("ledger", `${message} (stored for ${key}; forgetIdentity() deletes the identity and its ledger)`);
    }
    throw sdkError(/invalid privacy policy/.test(message) ? "policy" : "internal", message);
  }
  const client = new FlClient(rt, created, ep, options, { key, record });
  client.identityName = identityName;
  client.modelRound = null;
  if (record.model?.file && pinned) {
    try { // the last global model this identity received: usable at once, before (or without) any round
      client.modelRound = await client._call("load_model", record.model.file);
      early.push({ type: "model", round: client.modelRound, restored: true });
    } catch (err) {
      console.warn("fl-client: the stored global model was not restored:", err);
    }
  }
  if (options.data) await client.setData(options.data.x, options.data.y);
  client.loading = early;
  return client;
}

export { bytesToHex, endpoints, sleep };
