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

self.addEventListener("install", () => self.skipWaiting());

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
  const ctrl = new AbortController();
  const timer = setTimeout(() => ctrl.abort(), NETWORK_TIMEOUT_MS);
  try {
    const resp = await fetch(request, { signal: ctrl.signal });
    if (resp.status === 200) event.waitUntil(cache.put(request, resp.clone()).catch(() => {}));
    if (resp.status < 500) return resp;
    return (await cache.match(request)) ?? resp;
  } catch (err) {
    const hit = await cache.match(request);
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
