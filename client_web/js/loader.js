// Downloads for the browser runtime that cannot hang and cannot be tampered with (issue 14).
//
//   const bytes = await fetchAsset(url, { sha256, size }, { onProgress, stallMs });
//
// - progress: onProgress(loadedBytes) after every chunk;
// - a stalled download (no bytes for stallMs) is aborted and resumed where it stopped (Range: bytes=N-; a server
//   that answers 200 instead of 206 starts it over), up to `attempts` times with growing waits;
// - every download is checked against the SHA-256 and size that /sdk/assets.json lists, wherever it came from;
// - with Cache Storage (secure contexts: https, localhost), a verified file is kept under CACHE_NAME and the next
//   load takes it from there (verified again); the service worker (client_web/sdk/fl-sw.js) serves the same cache.
export const CACHE_NAME = "fl-coordinator-assets-v1";

/** A failed loading stage; `fatal`: retrying cannot help (a file that is not what assets.json lists, a 4xx). */
export class LoadError extends Error {
  constructor(stage, message, fatal = false) {
    super(`${stage}: ${message}`);
    this.stage = stage;
    this.fatal = fatal;
  }
}

/** An HTTP answer that retrying will not change (client errors except timeouts and rate limits). */
const permanent = (status) => status >= 400 && status < 500 && status !== 408 && status !== 429;

export async function sha256Hex(bytes) {
  const digest = new Uint8Array(await crypto.subtle.digest("SHA-256", bytes));
  return Array.from(digest, (b) => b.toString(16).padStart(2, "0")).join("");
}

const sleep = (ms) => new Promise((resolve) => setTimeout(resolve, ms));
/** The wait before retry `attempt + 1`: 0.5, 1, 2, 4, 8, 8 … s. */
const backoff = (attempt) => sleep(Math.min(8000, 500 * 2 ** (attempt - 1)));

async function openCache() {
  try {
    return globalThis.caches ? await caches.open(CACHE_NAME) : null;
  } catch {
    return null; // e.g. storage disabled: download every time
  }
}

/** A verified copy of `url` from Cache Storage, or null (absent, or not what assets.json lists: dropped). */
export async function cachedAsset(url, expect) {
  const cache = await openCache();
  const hit = cache && await cache.match(url);
  if (!hit) return null;
  const bytes = new Uint8Array(await hit.arrayBuffer());
  if ((expect.size !== undefined && bytes.length !== expect.size) || (await sha256Hex(bytes)) !== expect.sha256) {
    await cache.delete(url);
    return null;
  }
  return bytes;
}

/** One attempt: append the body of `url` from byte `chunks.total` on to `chunks`; throws on a stall or error. */
async function download(url, chunks, stallMs, onChunk) {
  const ctrl = new AbortController();
  let timer = null;
  const rearm = () => {
    clearTimeout(timer);
    timer = setTimeout(() => ctrl.abort(new Error(`no data for ${stallMs / 1000} s`)), stallMs);
  };
  rearm();
  try {
    const headers = chunks.total > 0 ? { Range: `bytes=${chunks.total}-` } : {};
    const resp = await fetch(url, { headers, signal: ctrl.signal });
    if (resp.status === 200 && chunks.total > 0) {
      chunks.list.length = 0; // the server sent it whole: start over
      chunks.total = 0;
    } else if (!(resp.status === 200 || (resp.status === 206 && chunks.total > 0))) {
      if (permanent(resp.status)) throw new LoadError("download", `${url}: HTTP ${resp.status}`, true);
      throw new Error(`HTTP ${resp.status}`);
    }
    const reader = resp.body.getReader();
    for (;;) {
      const { done, value } = await reader.read();
      if (done) break;
      rearm();
      chunks.list.push(value);
      chunks.total += value.length;
      onChunk(chunks.total);
    }
  } catch (err) {
    throw ctrl.signal.aborted ? ctrl.signal.reason : err;
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The bytes of `url`, checked against `expect` {sha256, size}; from Cache Storage when a verified copy is there.
 * opts: onProgress(loaded) · stallMs (default 20000) · attempts (default 6) · cacheType (Content-Type stored).
 */
export async function fetchAsset(url, expect, opts = {}) {
  const cached = await cachedAsset(url, expect);
  if (cached) {
    opts.onProgress?.(cached.length, true);
    return cached;
  }
  const stallMs = opts.stallMs ?? 20000;
  const attempts = opts.attempts ?? 6;
  const chunks = { list: [], total: 0 };
  for (let attempt = 1; ; attempt++) {
    try {
      await download(url, chunks, stallMs, (n) => opts.onProgress?.(n, false));
      break;
    } catch (err) {
      if (err instanceof LoadError) throw err;
      if (attempt >= attempts) throw new LoadError("download", `${url}: ${err?.message ?? err} (${attempt} attempts)`);
      opts.onRetry?.({ attempt, error: String(err?.message ?? err), resumeAt: chunks.total });
      await backoff(attempt);
    }
  }
  const bytes = new Uint8Array(chunks.total);
  let at = 0;
  for (const c of chunks.list) {
    bytes.set(c, at);
    at += c.length;
  }
  const got = await sha256Hex(bytes);
  if ((expect.size !== undefined && bytes.length !== expect.size) || got !== expect.sha256) {
    throw new LoadError("integrity", `${url}: SHA-256 ${got.slice(0, 16)}… (${bytes.length} bytes) is not the ` +
                        `${expect.sha256.slice(0, 16)}… (${expect.size} bytes) that assets.json lists`, true);
  }
  const cache = await openCache();
  if (cache) {
    await cache.put(url, new Response(bytes, { headers: { "Content-Type": opts.cacheType ?? "application/octet-stream" } }))
      .catch(() => {}); // quota: the next load downloads again
  }
  return bytes;
}

/** fetch() with a timeout and retries, for small files (JSON, Python sources); throws LoadError(stage). */
export async function fetchWithRetry(url, stage, { timeoutMs = 20000, attempts = 4, init = {} } = {}) {
  for (let attempt = 1; ; attempt++) {
    const ctrl = new AbortController();
    const timer = setTimeout(() => ctrl.abort(new Error(`no answer in ${timeoutMs / 1000} s`)), timeoutMs);
    try {
      const resp = await fetch(url, { ...init, signal: ctrl.signal });
      if (permanent(resp.status)) throw new LoadError(stage, `${url}: HTTP ${resp.status}`, true);
      if (!resp.ok) throw new Error(`HTTP ${resp.status}`);
      const bytes = new Uint8Array(await resp.arrayBuffer());
      return { resp, bytes };
    } catch (err) {
      if (err instanceof LoadError) throw err;
      const message = ctrl.signal.aborted ? String(ctrl.signal.reason?.message ?? ctrl.signal.reason) : String(err?.message ?? err);
      if (attempt >= attempts) throw new LoadError(stage, `${url}: ${message}`);
      await backoff(attempt);
    } finally {
      clearTimeout(timer);
    }
  }
}

/**
 * Route fetch() calls for the given URLs (absolute) to bytes already downloaded and verified, so that a library
 * that fetches its own files (Pyodide: its wasm, stdlib zip and lock file) gets exactly those. Returns a function
 * that restores the previous fetch.
 */
export function serveFromMemory(files) {
  const previous = globalThis.fetch;
  globalThis.fetch = async function (input, init) {
    const url = typeof input === "string" ? input : input instanceof URL ? input.href : input?.url;
    const key = url && new URL(url, location.href).href;
    const hit = key && files.get(key);
    if (!hit) return previous.call(this, input, init);
    // the Cache Storage copy (verified above) when there is one: a response from Cache Storage lets the browser
    // reuse its compiled code for a wasm module (V8's code cache) instead of compiling 9.6 MB again
    const cache = await openCache();
    const kept = cache && await cache.match(key);
    if (kept && Number(kept.headers.get("Content-Length") ?? hit.bytes.length) === hit.bytes.length) return kept;
    return new Response(hit.bytes, { headers: { "Content-Type": hit.type } });
  };
  return () => {
    globalThis.fetch = previous;
  };
}
