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

/** Fetch the manifest's Python files into Pyodide's FS under `root` (each checked against the manifest's
 * SHA-256) and put `root` on sys.path. */
export async function loadPythonFiles(pyodide, pythonUrl, root = "/home/pyodide/fl") {
  const base = new URL(pythonUrl, location.href);
  const { bytes: mbytes } = await fetchWithRetry(new URL("manifest.json", base), "python-files", { init: { cache: "no-cache" } });
  const manifest = JSON.parse(new TextDecoder().decode(mbytes));
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
    const bytes = await fetchAsset(url, expect[url], {
      stallMs, cacheType: typeOf(url),
      onProgress: (n, fromCache) => {
        loaded.set(url, n);
        if (fromCache) cachedBytes += n;
        report();
      },
      onRetry: (r) => progress("download-retry", { url, ...r }),
    });
    files.set(url, { bytes, type: typeOf(url) });
  }));
  return { files, expect };
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
  let downloaded = 0;
  if (options.assetsUrl) {
    const base = new URL(options.assetsUrl, location.href);
    const { bytes } = await fetchWithRetry(base, "assets", { init: { cache: "no-cache" } });
    const assets = JSON.parse(new TextDecoder().decode(bytes));
    mark("assets");
    const entry = (part) => new URL(assets.entry[part], base).href;
    // the JS modules load while the large files download
    pyodideModule = import(entry("pyodide"));
    sodiumModule = import(entry("sodium"));
    const { files } = await preload(assets, base, progress, options.stallMs ?? 20000);
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
    const pyodideP = loadPyodide(indexURL ? { indexURL } : {}).then((p) => { mark("pyodide"); return p; });
    const sodiumP = sodiumModule.then((m) => m.default.ready.then(() => { mark("sodium"); return m.default; }));
    [pyodide, sodium, kernel] = await Promise.all([pyodideP, sodiumP, kernelP.then((k) => { mark("kernel"); return k; })]);
  } finally {
    restore();
  }
  const files = await loadPythonFiles(pyodide, options.pythonUrl ?? "/py/");
  mark("python-files");
  const rt = pyodide.pyimport("client_pyodide.runtime");
  rt.install(sodium, kernel.exports);
  rt.destroy();
  mark("ready");
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
  return { pyodide, sodium, kernel, files, timings, downloaded, run };
}
