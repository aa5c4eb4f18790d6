// Types of client_web/js/runtime.js (see docs/browser-kernel.md).
import type { PyodideInterface } from "pyodide";

export interface RuntimeOptions {
  /** Where manifest.json and the repository's Python files are served (default "/py/"). */
  pythonUrl?: string | URL;
  /** flkernel.wasm (default: kernel/flkernel.wasm next to js/). */
  kernelUrl?: string | URL;
  /** Pyodide's files (default: next to the resolved "pyodide" module). */
  indexURL?: string;
  /** Called as each stage finishes: "sodium", "kernel", "pyodide", "python-files", "ready". */
  onProgress?: (event: { stage: string; ms: number }) => void;
}

export interface Runtime {
  pyodide: PyodideInterface;
  /** The ready libsodium-wrappers module. */
  sodium: any;
  /** The instantiated kernel (exports: memory, fl_*). */
  kernel: WebAssembly.Instance;
  /** Repository-relative paths of the Python files loaded into /home/pyodide/fl. */
  files: string[];
  /** Milliseconds since loadRuntime() started, per stage. */
  timings: Record<string, number>;
  /** Run Python in a fresh namespace; returns its `result` variable through JSON. */
  run(code: string): any;
}

export function loadKernel(url?: string | URL): Promise<WebAssembly.Instance>;
export function loadPythonFiles(pyodide: PyodideInterface, pythonUrl: string | URL, root?: string): Promise<string[]>;
export function loadRuntime(options?: RuntimeOptions): Promise<Runtime>;
