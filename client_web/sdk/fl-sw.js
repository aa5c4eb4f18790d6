// fl-sw.js – the demo page's service worker, served at /sw.js (scope: the coordinator's origin). See
// docs/browser-sdk.md "Loading".
//
// - /assets/<hash>/… (Pyodide, libsodium, the kernel; content-hashed, immutable): from Cache Storage first – the
//   same cache the SDK's loader (client_web/js/loader.js) fills and checks against /sdk/assets.json's SHA-256;
// - the page, /sdk/…, /py/… and the demo's shard: from the network (so a new version is picked up at once), and
//   from the last copy kept here when the coordinator does not answer within NETWORK_TIMEOUT_MS – a returning tab
//   starts even while the coordinator is down, and its client reconnects by itself;
// - everything else (/status, /health, the WebSocket, range requests) is not touched.
const ASSETS = "fl-coordinator-assets-v1";
const PAGES = "fl-coordinator-pages-v1";
const NETWORK_TIMEOUT_MS = 4000;
const KEPT_PATHS = [/^\/$/, /^\/sdk\//, /^\/py\//, /^\/demo\/shard$/];

// what a tab needs to start without the network, fetched when the service worker installs (the first visit's own
// requests happen before it controls the page): the page and its scripts, the asset list and the modules it names
// (the large files the loader downloads are added to the same cache by the loader), the Python bundle
const SHELL = ["/", "/sdk/demo/demo.js", "/sdk/sdk/fl-client.js", "/sdk/sdk/fl-worker.js", "/sdk/js/runtime.js",
               "/sdk/js/loader.js"];

async function precache() {
  const pages = await caches.open(PAGES);
  await pages.addAll(SHELL);
  const assetsResp = await fetch("/sdk/assets.json", { cache: "no-cache" });
  const manifestResp = await fetch("/py/manifest.json", { cache: "no-cache" });
  if (!assetsResp.ok || !manifestResp.ok) throw new Error("assets.json or the Python manifest unavailable");
  await pages.put("/sdk/assets.json", assetsResp.clone());
  await pages.put("/py/manifest.json", manifestResp.clone());
  const assets = await assetsResp.json();
  const base = new URL("/sdk/assets.json", self.location.origin);
  const modules = Object.keys(assets.files).map((rel) => new URL(rel, base).href).filter((u) => u.endsWith(".mjs"));
  const kept = await caches.open(ASSETS);
  for (const url of modules) if (!(await kept.match(url))) await kept.add(url);
  const manifest = await manifestResp.json();
  await pages.addAll(manifest.files.map((f) => `/py/${f}`));
}

self.addEventListener("install", (event) => {
  // a failed precache (the coordinator went away meanwhile) must not keep the worker from installing: the pages'
  // own requests fill the caches as they pass
  event.waitUntil(precache().catch((err) => console.warn("fl-sw: precache incomplete:", err)).then(() => self.skipWaiting()));
});

// {type: "keep", urls}: also keep these (the demo's data shard, whose URL only the page knows)
self.addEventListener("message", (event) => {
  if (event.data?.type !== "keep" || !Array.isArray(event.data.urls)) return;
  const urls = event.data.urls.filter((u) => typeof u === "string" && new URL(u, self.location.origin).origin === self.location.origin);
  event.waitUntil(caches.open(PAGES).then((c) => c.addAll(urls)).catch(() => {}));
});

self.addEventListener("activate", (event) => {
  event.waitUntil((async () => {
    for (const name of await caches.keys()) {
      if (name.startsWith("fl-coordinator-") && name !== ASSETS && name !== PAGES) await caches.delete(name);
    }
    await self.clients.claim();
  })());
});

// (a copy is stored while the page reads the response – awaiting the store first would hold back every byte until
// the whole file is in, and a slow link would look stalled to the loader)
async function cacheFirst(event, request) {
  const cache = await caches.open(ASSETS);
  const hit = await cache.match(request.url);
  if (hit) return hit;
  const resp = await fetch(request);
  if (resp.status === 200) event.waitUntil(cache.put(request.url, resp.clone()).catch(() => {}));
  return resp;
}

async function networkFirst(event, request) {
  const cache = await caches.open(PAGES);
  // the page's own URL carries its options (?shard=…&identity=…): any copy of the page will do
  const match = () => cache.match(request, { ignoreSearch: request.mode === "navigate" });
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), NETWORK_TIMEOUT_MS);
  try {
    const resp = await fetch(request, { signal: ctrl.signal });
    if (resp.status === 200) event.waitUntil(cache.put(request, resp.clone()).catch(() => {}));
    if (resp.status < 500) return resp;
    return (await match()) ?? resp;
  } catch (err) {
    const hit = await match();
    if (hit) return hit;
    throw err;
  } finally {
    clearTimeout(timer);
  }
}

self.addEventListener("fetch", (event) => {
  const request = event.request;
  if (request.method !== "GET" || request.headers.has("range")) return;
  const url = new URL(request.url);
  if (url.origin !== self.location.origin) return;
  if (url.pathname.startsWith("/assets/")) event.respondWith(cacheFirst(event, request));
  else if (KEPT_PATHS.some((re) => re.test(url.pathname))) event.respondWith(networkFirst(event, request));
});
