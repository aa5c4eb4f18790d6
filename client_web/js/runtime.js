// The browser client's runtime: Pyodide + the repository's Python client core + the WASM kernel + libsodium.
//
//   import { loadRuntime } from "./js/runtime.js";
//   const rt = await loadRuntime({ assetsUrl: "/sdk/assets.json", pythonUrl: "/py/" });
//   rt.run("from client_pyodide import runtime; result = runtime.crypto().name");   // → "libsodium-wrappers"
//
// With `assetsUrl` (what the SDK's worker, client_web/sdk/fl-worker.js, uses) every large file comes from the
// content-hashed URLs that /sdk/assets.json lists, downloaded by client_web/js/loader.js (progress, resume after a
// stall, SHA-256 check, Cache Storage) – no import map needed, so it runs in a module worker. Without it the
// bare specifiers "pyodide" and "libsodium-wrappers" are imported, which a page's import map must resolve (the
// test harness, client_web/harness.html). Everything comes from the serving origin, nothing from a CDN.
import { LoadError, fetchAsset, fetchWithRetry, serveFromMemory, sha256Hex } from "./loader.js";

const CLIENT_WEB = new URL("../", import.meta.url); // client_web/ as served

/** Compile and instantiate the kernel (no imports: it is freestanding) from its URL or its bytes. */
export async function loadKernel(source = new URL("kernel/flkernel.wasm", CLIENT_WEB)) {
  let bytes = source;
  if (!(source instanceof Uint8Array)) {
    const resp = await fetch(source);
    if (!resp.ok) throw new Error(`kernel: HTTP ${resp.status} for ${source}`);
    bytes = await resp.arrayBuffer();
  }
  const { instance } = await WebAssembly.instantiate(bytes, {});
  return instance;
}

/** The Python bundle's manifest ({files, sha256}) and its bytes. */
async function fetchManifest(pythonUrl) {
  const base = new URL(pythonUrl, location.href);
  const { bytes } = await fetchWithRetry(new URL("manifest.json", base), "python-files", { init: { cache: "no-cache" } });
  return { manifest: JSON.parse(new TextDecoder().decode(bytes)), bytes };
}

/** Fetch the manifest's Python files into Pyodide's FS under `root` (each checked against the manifest's
 * SHA-256) and put `root` on sys.path. */
export async function loadPythonFiles(pyodide, pythonUrl, root = "/home/pyodide/fl", manifest = null) {
  const base = new URL(pythonUrl, location.href);
  manifest = manifest ?? (await fetchManifest(pythonUrl)).manifest;
  const blobs = await Promise.all(manifest.files.map(async (path) => {
    const { bytes: data } = await fetchWithRetry(new URL(path, base), "python-files");
    if (manifest.sha256 && (await sha256Hex(data)) !== manifest.sha256[path]) {
      throw new LoadError("integrity", `python file ${path}: SHA-256 does not match the manifest`, true);
    }
    return [path, data];
  }));
  for (const [path, data] of blobs) {
    const dir = `${root}/${path}`.split("/").slice(0, -1).join("/");
    pyodide.FS.mkdirTree(dir);
    pyodide.FS.writeFile(`${root}/${path}`, data);
  }
  pyodide.runPython(`import sys\nif ${JSON.stringify(root)} not in sys.path: sys.path.insert(0, ${JSON.stringify(root)})`);
  return manifest.files;
}

const TYPES = { ".wasm": "application/wasm", ".json": "application/json", ".zip": "application/zip" };
const typeOf = (url) => TYPES[Object.keys(TYPES).find((ext) => url.endsWith(ext))] ?? "application/octet-stream";

/** assets.json → the preloaded files' bytes (verified), reporting {stage: "download", loaded, total}. */
async function preload(assets, base, progress, stallMs) {
  const files = new Map();
  const list = assets.preload.map((rel) => new URL(rel, base).href);
  const expect = Object.fromEntries(Object.entries(assets.files).map(([rel, e]) => [new URL(rel, base).href, e]));
  const total = list.reduce((s, u) => s + expect[u].size, 0);
  const loaded = new Map();
  let cachedBytes = 0;
  const report = () => progress("download", { loaded: [...loaded.values()].reduce((a, b) => a + b, 0), total, cachedBytes });
  await Promise.all(list.map(async (url) => {
    const type = typeOf(url);
    const bytes = await fetchAsset(url, expect[url], {
      stallMs, cacheType: type,
      onProgress: (n, fromCache) => {
        loaded.set(url, n);
        if (fromCache) cachedBytes += n;
        report();
      },
      onRetry: (r) => progress("download-retry", { url, ...r }),
    });
    files.set(url, { bytes, type });
  }));
  return files;
}

// ── memory snapshot: a returning tab restores Python's heap instead of starting the interpreter ──────────
// Starting CPython in Pyodide and importing the client core takes ≈ 2.5 s on these machines; restoring a memory
// snapshot taken right after that (Pyodide's _makeSnapshot/_loadSnapshot, pinned Pyodide version) ≈ 0.35 s. The
// snapshot is taken before any client exists (no key, no data in it) and before the JS objects (libsodium, the
// kernel) are handed to Python; it is kept in Cache Storage under a key made of the assets' and the Python
// bundle's hashes, so any new version of either makes a new one. Python's `random` is reseeded after a restore.
const SNAPSHOTS = "fl-coordinator-snapshots-v1";
const PRELOAD_MODULES = "import client_pyodide.client, client_pyodide.runtime, client_pyodide.backend, " +
  "client_pyodide.kernel, client_pyodide.sodium_crypto, client_pyodide.engine";

async function snapshotKey(parts) {
  const enc = new TextEncoder();
  return `https://snapshot.invalid/${await sha256Hex(enc.encode(parts.join("\n")))}`;
}

async function cachedSnapshot(key) {
  try {
    const cache = globalThis.caches && await caches.open(SNAPSHOTS);
    const hit = cache && await cache.match(key);
    return hit ? new Uint8Array(await hit.arrayBuffer()) : null;
  } catch {
    return null;
  }
}

async function keepSnapshot(key, bytes) {
  try {
    if (!globalThis.caches) return;
    for (const name of await caches.keys()) if (name === SNAPSHOTS) await caches.delete(name); // one at a time
    await (await caches.open(SNAPSHOTS)).put(key, new Response(bytes));
  } catch {
    // quota: the next load starts Python the long way
  }
}

/**
 * Load everything the browser client needs, in parallel where possible.
 * options.assetsUrl  – /sdk/assets.json of the coordinator (content-hashed URLs, hashes, sizes); without it the
 *                      page's import map resolves "pyodide" and "libsodium-wrappers"
 * options.pythonUrl  – where manifest.json and the Python files are served (default "/py/")
 * options.kernelUrl, options.indexURL – without assetsUrl: the kernel and Pyodide's directory
 * options.onProgress – called with {stage, ms, …}: "assets", "download" {loaded, total, cachedBytes},
 *                      "download-retry" {url, attempt, error, resumeAt}, "pyodide", "sodium", "kernel",
 *                      "python-files", "ready"
 * options.stallMs    – a download without data for this long is resumed (default 20000)
 * options.snapshot   – with assetsUrl: restore / keep a memory snapshot of the started interpreter (default true)
 * Returns {pyodide, sodium, kernel, files, timings, bytes, run(code) → JSON-decoded `result`}.
 */
export async function loadRuntime(options = {}) {
  const t0 = performance.now();
  const timings = {};
  const progress = (stage, extra = {}) => {
    timings[stage] = performance.now() - t0;
    if (options.onProgress) options.onProgress({ stage, ms: timings[stage], ...extra });
  };
  const mark = (stage) => progress(stage);
  let pyodideModule, sodiumModule, kernelP, indexURL, restore = () => {};
  let downloaded = 0, snapKey = null, snapshot = null, manifest = null;
  if (options.assetsUrl) {
    const base = new URL(options.assetsUrl, location.href);
    const manifestP = fetchManifest(options.pythonUrl ?? "/py/");
    const { bytes } = await fetchWithRetry(base, "assets", { init: { cache: "no-cache" } });
    const assets = JSON.parse(new TextDecoder().decode(bytes));
    const m = await manifestP;
    manifest = m.manifest;
    if (options.snapshot !== false) {
      snapKey = await snapshotKey([await sha256Hex(bytes), await sha256Hex(m.bytes)]);
      snapshot = await cachedSnapshot(snapKey);
    }
    mark("assets");
    const entry = (part) => new URL(assets.entry[part], base).href;
    // the JS modules load while the large files download
    pyodideModule = import(entry("pyodide"));
    sodiumModule = import(entry("sodium"));
    const files = await preload(assets, base, progress, options.stallMs ?? 20000);
    downloaded = [...files.values()].reduce((s, f) => s + f.bytes.length, 0);
    indexURL = new URL("./", entry("pyodide")).href;
    kernelP = loadKernel(files.get(entry("kernel")).bytes);
    restore = serveFromMemory(files); // Pyodide fetches its wasm, stdlib and lock file: these verified bytes
  } else {
    pyodideModule = import("pyodide");
    sodiumModule = import("libsodium-wrappers");
    indexURL = options.indexURL;
    kernelP = loadKernel(options.kernelUrl);
  }
  let pyodide, sodium, kernel;
  try {
    const { loadPyodide } = await pyodideModule;
    const config = { ...(indexURL ? { indexURL } : {}),
                     ...(snapshot ? { _loadSnapshot: snapshot } : snapKey ? { _makeSnapshot: true } : {}) };
    const pyodideP = loadPyodide(config).then((p) => { mark("pyodide"); return p; });
    const sodiumP = sodiumModule.then((m) => m.default.ready.then(() => { mark("sodium"); return m.default; }));
    [pyodide, sodium, kernel] = await Promise.all([pyodideP, sodiumP, kernelP.then((k) => { mark("kernel"); return k; })]);
  } finally {
    restore();
  }
  const files = await loadPythonFiles(pyodide, options.pythonUrl ?? "/py/", undefined, manifest);
  if (snapshot) {
    pyodide.runPython("import random\nrandom.seed()"); // not the state frozen in the snapshot
  } else if (snapKey) {
    pyodide.runPython(PRELOAD_MODULES);
    try {
      const made = pyodide.makeMemorySnapshot();
      keepSnapshot(snapKey, made); // in the background: the client does not wait for the 30 MB write
    } catch (err) {
      console.warn("fl-client: no memory snapshot:", err);
    }
  }
  mark("python-files");
  const rt = pyodide.pyimport("client_pyodide.runtime");
  rt.install(sodium, kernel.exports);
  rt.destroy();
  progress("ready", { snapshot: Boolean(snapshot) });
  const json = pyodide.pyimport("json");
  /** Run Python `code` in a fresh namespace; returns the JSON-decoded value of its variable `result`. */
  function run(code) {
    const ns = pyodide.globals.get("dict")();
    try {
      pyodide.runPython(code, { globals: ns });
      return ns.has("result") ? JSON.parse(json.dumps(ns.get("result"))) : null;
    } finally {
      ns.destroy();
    }
  }
  return { pyodide, sodium, kernel, files, timings, downloaded, snapshot: Boolean(snapshot), run };
}
