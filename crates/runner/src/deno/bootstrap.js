// The bootstrap of a deno bundle's instance: the runner writes it into the bundle's work
// directory with `const CONFIG = {...}` above this text (crates/runner/src/deno/bootstrap.rs)
// and runs it as the main module. It serves HTTP/1.1 on a unix socket, gives up its rights on
// that socket, loads the bundle's module, checks that every route's handler is a function it
// exports, and then calls the handler the runner names for each request.
//
// Protocol with the runner (headers it sets on each request, after removing any of these a
// client sent):
//   x-atoll-handler  the route's handler (an export of the module)
//   x-atoll-params   the route's parameters, JSON, percent-encoded
//   x-atoll-remote   the client's address (`ip:port`, `[v6]:port`), if known
//   x-atoll-ready    a readiness probe: answered 200 once the module is loaded and checked
// and in answers (handlers' own `x-atoll-*` headers are removed):
//   x-atoll-denied   the permission the handler was denied, percent-encoded (with a 403)
// A module that cannot load, or lacks a handler, ends the instance with status 3 after a line
// `atoll-load-error: WHY` on stderr.

const { socket, entry, routes, paths } = CONFIG;
const PREFIX = "x-atoll-";

// A bad task of the bundle (an unhandled rejection, a throwing timer) must not end the
// instance and every request in it: log, keep serving.
globalThis.addEventListener("unhandledrejection", (e) => {
  e.preventDefault();
  console.error("atoll: unhandled rejection:", e.reason);
});
globalThis.addEventListener("error", (e) => {
  e.preventDefault();
  console.error("atoll: uncaught exception:", e.error);
});

function message(e) {
  return e instanceof Error ? e.message : String(e);
}

// NotCapable: Deno's permissions said no. PermissionDenied: the operating system (or the
// sandbox) did.
function isDenied(e) {
  return e instanceof Deno.errors.NotCapable || e instanceof Deno.errors.PermissionDenied;
}

function text(status, body, headers = {}) {
  return new Response(body + "\n", { status, headers: { "content-type": "text/plain; charset=utf-8", ...headers } });
}

function loadError(why) {
  console.error(`atoll-load-error: ${why}`);
  Deno.exit(3);
}

let mod = {};
let loaded;

function resolve(name) {
  if (typeof mod[name] === "function") return mod[name];
  const d = mod.default;
  if (name === "fetch" && d !== null && typeof d === "object" && typeof d.fetch === "function") {
    return (req, ctx) => d.fetch(req, ctx);
  }
  return undefined;
}

async function serve(req) {
  const h = req.headers;
  await loaded;
  if (h.has("x-atoll-ready")) return text(200, "ready");
  const name = h.get("x-atoll-handler") ?? "";
  const handler = resolve(name);
  if (handler === undefined) return text(500, `the bundle has no handler \`${name}\``);
  let params = {};
  try {
    params = JSON.parse(decodeURIComponent(h.get("x-atoll-params") ?? "%7B%7D"));
  } catch {
    // The runner always sends JSON; nothing else reaches here.
  }
  let remoteAddr = null;
  const remote = h.get("x-atoll-remote");
  if (remote !== null) {
    const colon = remote.lastIndexOf(":");
    remoteAddr = { transport: "tcp", hostname: remote.slice(0, colon).replace(/^\[|\]$/g, ""), port: Number(remote.slice(colon + 1)) };
  }
  const headers = new Headers();
  for (const [k, v] of h) {
    if (!k.startsWith(PREFIX)) headers.append(k, v);
  }
  // The instance is reached over a unix socket (`http+unix:`); the bundle sees the URL the
  // client asked for.
  const { pathname, search } = new URL(req.url);
  let url;
  try {
    url = new URL(`http://${h.get("host") ?? "localhost"}${pathname}${search}`);
  } catch {
    url = new URL(`http://localhost${pathname}${search}`);
  }
  const body = req.method === "GET" || req.method === "HEAD" ? undefined : await req.arrayBuffer();
  // (Not `req.signal`: Deno 2.9 warns about its legacy abort on every instance that reads it.)
  const request = new Request(url, { method: req.method, headers, body });
  let res;
  try {
    res = await handler(request, { params, paths, remoteAddr });
  } catch (e) {
    if (isDenied(e)) {
      const why = message(e);
      return text(403, `denied: ${why}`, { "x-atoll-denied": encodeURIComponent(why) });
    }
    console.error(`atoll: handler \`${name}\` failed:`, e);
    return text(500, message(e));
  }
  if (!(res instanceof Response)) {
    return text(500, `handler \`${name}\` returned ${res === null ? "null" : typeof res}, not a Response`);
  }
  for (const k of res.headers.keys()) {
    if (k.startsWith(PREFIX)) {
      const clean = new Headers(res.headers);
      for (const key of [...clean.keys()]) {
        if (key.startsWith(PREFIX)) clean.delete(key);
      }
      return new Response(res.body, { status: res.status, statusText: res.statusText, headers: clean });
    }
  }
  return res;
}

Deno.serve({ path: socket, onListen() {} }, serve);
// Listening is done: the bundle's code gets no right on the socket (it keeps reading its
// work directory, which holds it).
Deno.permissions.revokeSync({ name: "write", path: socket });
Deno.permissions.revokeSync({ name: "net", host: `unix:${socket}` });

loaded = (async () => {
  try {
    mod = await import(entry);
  } catch (e) {
    loadError(`cannot load ${entry}: ${isDenied(e) ? "denied: " : ""}${e instanceof Error && e.stack ? e.stack : message(e)}`);
  }
  for (const { index, handler } of routes) {
    if (resolve(handler) === undefined) {
      const exports = Object.keys(mod).filter((k) => typeof mod[k] === "function").slice(0, 20).join(", ");
      const fetch = handler === "fetch" ? " (nor `export default { fetch }`)" : "";
      loadError(`routes[${index}].handler \`${handler}\` is not a function the module exports${fetch} (it exports: ${exports})`);
    }
  }
})();
