// fl-worker.js – the browser SDK's module worker: Pyodide, the WASM kernel, libsodium and the Python client
// sessions (client_pyodide.client.BrowserClient) live here, off the page's main thread (issue 14: a page that
// ran them froze for 6–9 s while loading and ~3 s per round with a larger model). client_web/sdk/fl-client.js
// starts it and talks to it with messages:
//
//   page → worker  {id, op: "load", args: {assetsUrl, pythonUrl, stallMs}}
//                  {id, op: "create", args: {seed, coordinatorKey, maxBatch, policy, ledger, enrolmentToken}}
//                  {id, op: "call", args: {handle, method, args}}   – a BrowserClient method
//                  {id, op: "frame", args: {handle, data}}          – receive(data) + take_events()
//                  {id, op: "start", args: {handle}}                – the handshake's first frames
//   worker → page  {id, ok: true, result, state: {coordinatorKey, bye?}}
//                  {id, ok: false, error: {message, python, stage, fatal}}
//                  {progress: {stage, ms, …}}                       – while loading (runtime.js's onProgress)
//
// Calls are handled in the order they arrive; Python runs synchronously, so one call finishes before the next.
import { loadRuntime } from "../js/runtime.js";

let runtime = null;
const clients = new Map(); // handle → BrowserClient (PyProxy)
let nextHandle = 1;

/** Python value → plain JS (dicts as objects), freeing the proxy. */
function toJs(r) {
  if (r === undefined || r === null || typeof r !== "object" || typeof r.toJs !== "function") return r;
  try {
    return r.toJs({ dict_converter: Object.fromEntries });
  } finally {
    r.destroy();
  }
}

function pyCall(obj, name, ...args) {
  const method = obj[name];
  try {
    return toJs(method(...args));
  } finally {
    method.destroy?.();
  }
}

function client(handle) {
  const py = clients.get(handle);
  if (!py) throw new Error(`no client ${handle} in this worker`);
  return py;
}

// the BrowserClient methods the page may call (policy and ledger come with "create" and the ledger events)
const ALLOWED = new Set(["leave", "ledger_persisted", "set_data", "predict", "model_file", "load_model",
                         "last_input", "describe_frame"]);

const ops = {
  async load({ assetsUrl, pythonUrl, stallMs }) {
    if (!runtime) {
      runtime = await loadRuntime({ assetsUrl, pythonUrl, stallMs, onProgress: (p) => postMessage({ progress: p }) });
    }
    return { timings: runtime.timings, downloaded: runtime.downloaded, snapshot: runtime.snapshot };
  },

  create({ seed, coordinatorKey, maxBatch, policy, ledger, enrolmentToken }) {
    const { BrowserClient } = runtime.pyodide.pyimport("client_pyodide.client");
    let py;
    try {
      py = BrowserClient.callKwargs({ identity_seed: seed, coordinator_key: coordinatorKey ?? null,
                                      max_batch: maxBatch, policy, ledger, enrolment_token: enrolmentToken ?? null });
    } finally {
      BrowserClient.destroy();
    }
    const handle = nextHandle++;
    clients.set(handle, py);
    return { handle, clientId: py.client_id, publicKey: py.public_key_hex,
             policy: pyCall(py, "policy"), defaultPolicy: pyCall(py, "default_policy"),
             ledger: pyCall(py, "ledger_summary"), ledgerState: pyCall(py, "ledger_state_json") };
  },

  call({ handle, method, args = [] }) {
    if (!ALLOWED.has(method)) throw new Error(`unknown method ${method}`);
    return pyCall(client(handle), method, ...args);
  },

  // receive(data) + take_events()
  frame({ handle, data }) {
    const py = client(handle);
    let frames = [], error = null;
    const t0 = performance.now();
    try {
      frames = pyCall(py, "receive", data);
    } catch (err) {
      error = lastLine(err);
    }
    const seconds = (performance.now() - t0) / 1000; // a task's frame: the local training (and what follows it)
    const events = pyCall(py, "take_events").map((ev) => (ev.type === "trained" ? { ...ev, seconds } : ev));
    return { frames, error, events };
  },

  start({ handle }) {
    return { frames: pyCall(client(handle), "start") };
  },
};

/** The last line of a Pyodide PythonError ("ValueError: …"), without the traceback. */
function lastLine(err) {
  const lines = String(err?.message ?? err).trim().split("\n");
  return lines[lines.length - 1];
}

// the worker runs under the Content-Security-Policy of its own script's response (the coordinator sends the same
// policy as for the page): a violation here – e.g. no 'wasm-unsafe-eval' – is reported to the page, where it ends
// loading with a fatal error instead of being retried
self.addEventListener("securitypolicyviolation", (e) => {
  postMessage({ progress: { stage: "csp-violation", directive: e.violatedDirective, blocked: e.blockedURI,
                            sample: e.sample } });
});

/** Errors that retrying cannot fix: the policy forbids what the runtime needs. */
const blockedByPolicy = (message) => /Content Security Policy|'(wasm-)?unsafe-eval'/i.test(message);

self.onmessage = async (e) => {
  const { id, op, args } = e.data ?? {};
  if (!(op in ops)) {
    postMessage({ id, ok: false, error: { message: `unknown op ${op}`, python: false } });
    return;
  }
  try {
    const result = await ops[op](args ?? {});
    const py = args?.handle !== undefined ? clients.get(args.handle) : null;
    let state = null;
    if (py) {
      state = { coordinatorKey: py.coordinator_key ?? null };
      // after anything that sends frames: a signed bye for the page to send synchronously if it is closed before
      // the next one (the coordinator only needs sequence numbers to grow, so an unused bye costs nothing)
      if (op === "frame" || op === "start" || args.method === "ledger_persisted") state.bye = pyCall(py, "leave", "page closed");
    }
    postMessage({ id, ok: true, result, state });
  } catch (err) {
    const python = err?.constructor?.name === "PythonError" || err?.type !== undefined;
    const message = python ? lastLine(err) : String(err?.message ?? err);
    postMessage({ id, ok: false, error: { message, python, stage: err?.stage ?? null,
                                          fatal: Boolean(err?.fatal) || python || blockedByPolicy(message) } });
  }
};
