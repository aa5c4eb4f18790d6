// The browser client's runtime: Pyodide + the repository's Python client core + the WASM kernel + libsodium.
//
//   import { loadRuntime } from "./js/runtime.js";
//   const rt = await loadRuntime({ pythonUrl: "/py/" });
//   rt.run("from client_pyodide import runtime; result = runtime.crypto().name");   // → "libsodium-wrappers"
//
// The page must map the bare specifiers "pyodide", "libsodium-wrappers" and "libsodium" with an import map (see
// client_web/harness.html); everything is fetched from the serving origin, nothing from a CDN.
import { loadPyodide } from "pyodide";
import sodium from "libsodium-wrappers";

const CLIENT_WEB = new URL("../", import.meta.url); // client_web/ as served

/** Compile and instantiate the kernel (no imports: it is freestanding). */
export async function loadKernel(url = new URL("kernel/flkernel.wasm", CLIENT_WEB)) {
  const resp = await fetch(url);
  if (!resp.ok) throw new Error(`kernel: HTTP ${resp.status} for ${url}`);
  const { instance } = await WebAssembly.instantiate(await resp.arrayBuffer(), {});
  return instance;
}

async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

/** Fetch the manifest's Python files into Pyodide's FS under `root` and put `root` on sys.path. */
export async function loadPythonFiles(pyodide, pythonUrl, root = "/home/pyodide/fl") {
  const base = new URL(pythonUrl, location.href);
  const resp = await fetch(new URL("manifest.json", base));
  if (!resp.ok) throw new Error(`python manifest: HTTP ${resp.status}`);
  const manifest = await resp.json();
  const blobs = await Promise.all(manifest.files.map(async (path) => {
    const r = await fetch(new URL(path, base));
    if (!r.ok) throw new Error(`python file ${path}: HTTP ${r.status}`);
    const data = new Uint8Array(await r.arrayBuffer());
    if (manifest.sha256 && (await sha256Hex(data)) !== manifest.sha256[path]) {
      throw new Error(`python file ${path}: SHA-256 does not match the manifest`);
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

/**
 * Load everything the browser client needs, in parallel where possible.
 * options.pythonUrl  – where manifest.json and the Python files are served (default "/py/")
 * options.kernelUrl  – flkernel.wasm (default: client_web/kernel/flkernel.wasm beside this file)
 * options.indexURL   – Pyodide's files (default: resolved by the "pyodide" import, i.e. node_modules/pyodide/)
 * options.onProgress – called with {stage, ms}
 * Returns {pyodide, sodium, kernel, files, timings, run(code) → JSON-decoded `result`}.
 */
export async function loadRuntime(options = {}) {
  const t0 = performance.now();
  const timings = {};
  const mark = (stage) => {
    timings[stage] = performance.now() - t0;
    if (options.onProgress) options.onProgress({ stage, ms: timings[stage] });
  };
  const pyodideP = loadPyodide(options.indexURL ? { indexURL: options.indexURL } : {}).then((p) => { mark("pyodide"); return p; });
  const sodiumP = sodium.ready.then(() => { mark("sodium"); return sodium; });
  const kernelP = loadKernel(options.kernelUrl).then((k) => { mark("kernel"); return k; });
  const [pyodide, , kernel] = await Promise.all([pyodideP, sodiumP, kernelP]);
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
  return { pyodide, sodium, kernel, files, timings, run };
}
