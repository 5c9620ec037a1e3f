// The dashboard: plain JavaScript, no dependencies. It talks to the daemon's own API under
// /api (session cookie; state changes carry the CSRF token) and follows /api/v1/events to
// redraw when something changes. The island view also polls (`POLL_MS`): members' states
// and tunnel paths come from heartbeats and Nebula, which make no events.
"use strict";
const csrf = document.querySelector('meta[name="csrf-token"]').content;
const main = document.getElementById("main");

function esc(s) {
  return String(s ?? "").replace(/[&<>"']/g, c => ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" }[c]));
}
function bytes(n) {
  if (n == null) return "";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"]; let i = 0;
  while (n >= 1024 && i < u.length - 1) { n /= 1024; i++; }
  return (i ? n.toFixed(1) : n) + " " + u[i];
}
async function api(path, opts = {}) {
  const headers = Object.assign({ "X-CSRF-Token": csrf }, opts.body ? { "Content-Type": "application/json" } : {});
  const r = await fetch("/api" + path, Object.assign({ headers, credentials: "same-origin" }, opts));
  if (r.status === 401) { location.href = "/login"; throw new Error("logged out"); }
  if (!r.ok) { const e = await r.json().catch(() => ({ message: r.statusText })); throw new Error(e.message + (e.causes?.length ? ": " + e.causes.join(": ") : "")); }
  const t = r.headers.get("content-type") || "";
  return t.startsWith("application/json") ? r.json() : r.text();
}
// Reads an NDJSON response body, calling f for each object, until it ends or `signal` aborts.
async function ndjson(path, f, signal) {
  const r = await fetch("/api" + path, { credentials: "same-origin", signal });
  const reader = r.body.getReader(); const dec = new TextDecoder(); let buf = "";
  for (;;) {
    const { value, done } = await reader.read(); if (done) return;
    buf += dec.decode(value, { stream: true });
    let i; while ((i = buf.indexOf("\n")) >= 0) { const line = buf.slice(0, i); buf = buf.slice(i + 1); if (line) f(JSON.parse(line)); }
  }
}

let view = null;       // the current view's redraw function
let viewAbort = null;  // aborts the current view's streams
let viewTimer = null;  // the current view's poll, if it polls
let shown = null;      // the HTML last shown: a redraw that changes nothing leaves the page (and focus) alone
function show(html) { if (html === shown) return; shown = html; main.innerHTML = html; }
function fail(e) { show(`<p class="error" role="alert">${esc(e.message)}</p>`); }

async function containersView() {
  const [info, list, stats] = await Promise.all([api("/v1/info"), api("/v1/containers?all=true"), api("/v1/stats")]);
  const usage = Object.fromEntries(stats.map(s => [s.id, s.usage]));
  const groups = {};
  for (const c of list) { const p = c.spec.labels?.["com.docker.compose.project"] || ""; (groups[p] ||= []).push(c); }
  let html = `<h1>Host</h1><div class="summary">
    <div><b>Version</b>${esc(info.version)}</div><div><b>Runtime</b>${esc(info.runtime.name)} ${esc(info.runtime.version)}</div>
    <div><b>Cgroups</b>${esc(info.runtime.cgroup_mode)}</div><div><b>Containers</b>${info.containers_running} running of ${info.containers}</div>
    <div><b>Images</b>${info.images}</div><div><b>Platform</b>${esc(info.platform)} · kernel ${esc(info.host.kernel)}</div>
    <div><b>CPU</b>${info.host.cpus} cores · load ${info.host.load1.toFixed(2)}</div>
    <div><b>Memory</b>${bytes(info.host.memory_available_bytes)} free of ${bytes(info.host.memory_total_bytes)}</div>
    <div><b>Disk (data dir)</b>${bytes(info.host.disk_free_bytes)} free of ${bytes(info.host.disk_total_bytes)}</div></div>`;
  for (const [project, cs] of Object.entries(groups).sort()) {
    html += `<h2>${project ? "Project " + esc(project) : "Containers"}</h2><table><thead><tr><th scope="col">Name</th><th scope="col">State</th>
      <th scope="col">Image</th><th scope="col" class="wide">Ports</th><th scope="col">CPU</th><th scope="col">Memory</th></tr></thead><tbody>`;
    for (const c of cs) {
      const u = usage[c.id];
      const ports = (c.ports || []).map(p => `${p.host_port}→${p.container_port}/${p.protocol}`).join(", ");
      html += `<tr data-name="${esc(c.name)}"><td><a href="#/c/${encodeURIComponent(c.name)}">${esc(c.name)}</a></td>
        <td class="state-${esc(c.state)}">${esc(c.status)}</td><td>${esc(c.image)}</td><td class="wide">${esc(ports)}</td>
        <td>${u ? (u.cpu_ns / 1e9).toFixed(2) + " s" : ""}</td><td>${u ? bytes(u.memory_bytes) : ""}</td></tr>`;
    }
    html += "</tbody></table>";
  }
  if (!list.length) html += "<p>No containers yet.</p>";
  show(html);
}

async function containerView(name) {
  const c = await api(`/v1/containers/${encodeURIComponent(name)}`);
  const health = c.health ? ` (${esc(c.health.status)})` : "";
  show(`<h1>${esc(c.name)}</h1>
    <p>State: <span id="state" class="state-${esc(c.state)}">${esc(c.status)}</span>${health} · image ${esc(c.image)}</p>
    <div class="actions">
      <button id="start">Start</button><button id="stop">Stop</button><button id="restart">Restart</button>
      <button id="remove" class="danger">Remove</button></div>
    <h2>Logs</h2><pre id="logs" aria-label="Logs" tabindex="0"></pre>
    <h2>Inspect</h2><pre tabindex="0">${esc(JSON.stringify(c, null, 2))}</pre>`);
  const act = (verb, path, method = "POST") => async () => {
    if (!confirm(`${verb} ${c.name}?`)) return;
    try { await api(path, { method }); if (verb === "Remove") location.hash = "#/"; else render(); } catch (e) { alert(e.message); }
  };
  const base = `/v1/containers/${encodeURIComponent(c.id)}`;
  document.getElementById("start").onclick = act("Start", base + "/start");
  document.getElementById("stop").onclick = act("Stop", base + "/stop");
  document.getElementById("restart").onclick = act("Restart", base + "/restart");
  document.getElementById("remove").onclick = act("Remove", base + "?force=true", "DELETE");
  if (!viewAbort) {
    viewAbort = new AbortController();
    const logs = document.getElementById("logs");
    ndjson(`${base}/logs?follow=true&tail=200`, l => {
      const el = document.getElementById("logs"); if (!el) return;
      el.textContent += l.line + "\n"; el.scrollTop = el.scrollHeight;
    }, viewAbort.signal).catch(() => {});
    logs.dataset.following = "yes";
  }
}

async function imagesView() {
  const [images, list] = await Promise.all([api("/v1/images"), api("/v1/containers?all=true")]);
  let html = `<h1>Images</h1><form id="pull" class="actions"><label for="ref">Image</label><input id="ref" required placeholder="alpine:latest">
    <button type="submit">Pull</button></form><table><thead><tr><th scope="col">Tags</th><th scope="col">ID</th><th scope="col">Size</th>
    <th scope="col">Used by</th><th scope="col"><span class="wide">Actions</span></th></tr></thead><tbody>`;
  for (const i of images) {
    const users = list.filter(c => c.image_id === i.id).map(c => esc(c.name)).join(", ");
    const ref = i.repo_tags[0] || i.id;
    html += `<tr><td>${esc(i.repo_tags.join(", ") || "<none>")}</td><td>${esc(i.id.slice(7, 19))}</td><td>${bytes(i.size)}</td><td>${users}</td>
      <td><button class="danger" data-rm="${esc(ref)}">Remove</button></td></tr>`;
  }
  show(html + "</tbody></table>");
  for (const b of main.querySelectorAll("[data-rm]")) b.onclick = async () => {
    if (!confirm(`Remove ${b.dataset.rm}?`)) return;
    try { await api(`/v1/images?reference=${encodeURIComponent(b.dataset.rm)}`, { method: "DELETE" }); render(); } catch (e) { alert(e.message); }
  };
  document.getElementById("pull").onsubmit = async ev => {
    ev.preventDefault();
    try { await api("/v1/images/pull", { method: "POST", body: JSON.stringify({ reference: document.getElementById("ref").value }) }); render(); } catch (e) { alert(e.message); }
  };
}

async function networksView() {
  const nets = await api("/v1/networks");
  let html = `<h1>Networks</h1><table><thead><tr><th scope="col">Name</th><th scope="col">Subnet</th><th scope="col">IPv6</th><th scope="col">Internal</th></tr></thead><tbody>`;
  for (const n of nets) html += `<tr><td>${esc(n.name)}</td><td>${esc(n.subnet4)}</td><td>${esc(n.subnet6 || "")}</td><td>${n.internal ? "yes" : ""}</td></tr>`;
  show(html + "</tbody></table>");
}

const POLL_MS = 3000;

// How long until `t` (ms since the epoch), coarsely, so a redraw a few seconds later shows
// the same words unless something changed: "in 6 d 23 h", "in 4 min", "12 s ago".
function until(t, now) {
  const s = Math.round((t - now) / 1000), a = Math.abs(s);
  const d = Math.floor(a / 86400), h = Math.floor(a % 86400 / 3600), m = Math.floor(a % 3600 / 60);
  const text = d ? `${d} d ${h} h` : h ? `${h} h ${m} min` : m >= 2 ? `${m} min` : `${a} s`;
  return s >= 0 ? `in ${text}` : `${text} ago`;
}
// A certificate's standing: `expired`, `late` (less than a third of its lifetime left: members
// renew at two thirds, so its renewal is failing) or `ok`. Times in ms, the lifetime in s.
function certStanding(notAfter, lifetime, now) {
  if (notAfter <= now) return "expired";
  if (lifetime > 0 && (notAfter - now) * 3 < lifetime * 1000) return "late";
  return "ok";
}
function certCell(iso, lifetime, now) {
  if (!iso) return `<td>—</td>`;
  const t = Date.parse(iso), st = certStanding(t, lifetime, now);
  const note = { expired: "expired: ", late: "renewal overdue: ", ok: "" }[st];
  return `<td class="cert-${st}"><time datetime="${esc(iso)}" title="${esc(iso)}">${note}${esc(until(t, now))}</time></td>`;
}
function role(n) { return (n.role === "lighthouse" ? "lighthouse, relay" : "member") + (n.ca_host ? ", CA" : ""); }

async function islandView() {
  const info = await api("/v1/info");
  const s = info.island;
  // A leave between the two requests answers 404 here: the next poll shows no island.
  const nodes = s ? await api("/v1/nodes").catch(() => null) : null;
  if (!s || !nodes) {
    show(`<h1>Island</h1><p id="no-island">This host is in no island.</p>
      <p>To create one with this host as its first member, run on it:</p>
      <pre tabindex="0">atoll init --name NAME --public PUBLIC_ADDRESS</pre>
      <p>To join an existing island, make a code on one of its members with <code>atoll invite</code>, then run here:</p>
      <pre tabindex="0">atoll join CODE</pre>`);
    return;
  }
  const now = Date.now();
  const mesh = s.mesh_running ? "running" : "not running";
  let html = `<h1>Island ${esc(s.name)}</h1><div class="summary">
    <div><b>This host</b>${esc(s.this.name)} · ${esc(s.this.mesh_ip)}</div>
    <div><b>Members</b>${nodes.length}</div>
    <div><b>Mesh</b>${esc(s.mesh_cidr)} · <span class="${s.mesh_running ? "state-ready" : "state-down"}">${mesh}</span>${s.mesh_restarts ? ` · restarted ${s.mesh_restarts} times` : ""}</div>
    <div><b>Certificates of this host</b>expire ${esc(until(Date.parse(s.cert_not_after), now))} · renew ${esc(until(Date.parse(s.renew_at), now))}</div>
    <div><b>Island ID</b><span class="id">${esc(s.id)}</span></div></div>`;
  if (s.renew_error) html += `<p class="error" role="alert">Renewing this host's certificates failed (retrying): ${esc(s.renew_error)}</p>`;
  html += `<table id="members"><caption>Members, as this host sees them</caption><thead><tr><th scope="col">Name</th><th scope="col">Mesh IP</th>
    <th scope="col" class="wide">Public addresses</th><th scope="col" class="wide">Role</th><th scope="col">State</th><th scope="col">Path</th>
    <th scope="col">Certificate expires</th><th scope="col" class="wide">Version</th><th scope="col">Stacks</th></tr></thead><tbody>`;
  for (const n of nodes) {
    const path = n.this ? "this host" : n.path ?? "no tunnel";
    const stateText = n.state === "unknown" ? "unknown (not heard of yet)" : n.state;
    html += `<tr data-name="${esc(n.name)}"><th scope="row">${esc(n.name)}${n.this ? ` <span class="tag">this host</span>` : ""}</th>
      <td class="mesh-ip">${esc(n.mesh_ip)}</td><td class="wide">${esc(n.public.join(", ") || "—")}</td><td class="wide">${esc(role(n))}</td>
      <td class="state state-${esc(n.state)}">${esc(stateText)}</td><td class="path">${esc(path)}</td>
      ${certCell(n.cert_not_after, s.cert_lifetime, now)}<td class="wide">${esc(n.version)}</td><td class="resources">${resources(n)}</td></tr>`;
  }
  html += "</tbody></table>";
  show(html + await stacksGrid(nodes));
}

// A member's share of the stacks: replicas, and what they reserve of its CPUs and memory.
function resources(n) {
  const r = n.resources;
  const drain = n.availability === "drain" ? `<span class="tag">drained</span> ` : "";
  if (!r) return drain + "—";
  const gib = b => (b / 2 ** 30).toFixed(1) + " GiB", cpus = c => +(c / 1e9).toFixed(2);
  return `${drain}${r.replicas} replica${r.replicas === 1 ? "" : "s"} · ${cpus(r.reserved_nano_cpus)}/${cpus(r.nano_cpus)} CPUs · ${gib(r.reserved_memory_bytes)}/${gib(r.memory_bytes)} reserved`;
}

// Where each service's replicas run: a row per service, a column per member, a chip per
// replica in its state; replicas not placed are listed with the scheduler's reason.
async function stacksGrid(nodes) {
  const services = await api("/v1/services").catch(() => []);
  if (!services.length) return `<h2>Stacks</h2><p id="no-stacks">No stack is deployed. Deploy one with <code>atoll stack deploy -c compose.yaml NAME</code>.</p>`;
  const stacks = [...new Set(services.map(s => s.stack))];
  const tasks = (await Promise.all(stacks.map(n => api(`/v1/stacks/${encodeURIComponent(n)}/tasks`).catch(() => [])))).flat();
  let html = `<h2>Stacks</h2><table id="placement"><caption>What runs where: each replica on its member, in its state</caption>
    <thead><tr><th scope="col">Service</th><th scope="col">Replicas</th>${nodes.map(n => `<th scope="col">${esc(n.name)}</th>`).join("")}</tr></thead><tbody>`;
  for (const svc of services) {
    const mine = tasks.filter(t => t.service === svc.name);
    html += `<tr data-service="${esc(svc.name)}"><th scope="row">${esc(svc.name)} <span class="tag">${esc(svc.mode)}</span></th><td>${svc.running}/${svc.desired}</td>`;
    for (const n of nodes) {
      const here = mine.filter(t => t.node === n.name && t.desired_state === "running");
      html += `<td>${here.map(t => `<span class="chip task-${esc(t.current_state)}" title="${esc(t.name + ": " + t.current_state + (t.error ? " (" + t.error + ")" : ""))}">${esc(t.name.split(".").slice(1).join(".").slice(0, 8))} ${esc(t.current_state)}</span>`).join(" ")}</td>`;
    }
    html += "</tr>";
    const pending = mine.filter(t => t.current_state === "pending");
    if (pending.length) html += `<tr class="pending"><td></td><td colspan="${nodes.length + 1}" class="error">${pending.length} pending: ${esc(pending[0].error || "")}</td></tr>`;
  }
  return html + "</tbody></table>";
}

// The island's public names: its zones (what to set at the registrar), their records, the keys
// that delegate sub-zones, and the certificates with their expiry.
async function namesView() {
  const info = await api("/v1/info");
  if (!info.island) { show(`<h1>Names</h1><p id="no-island">This host is in no island: names are the island's.</p>`); return; }
  const [domains, keys, certs] = await Promise.all([api("/v1/domains"), api("/v1/keys"), api("/v1/certificates")]);
  if (!domains.length) {
    show(`<h1>Names</h1><p id="no-domains">The island serves no domain. Serve one with <code>atoll domain add DOMAIN</code>: its public hosts become the domain's nameservers.</p>`);
    return;
  }
  const now = Date.now();
  let html = "<h1>Names</h1>";
  for (const d of domains) {
    const records = await api(`/v1/domains/${encodeURIComponent(d.domain)}/records`).catch(() => []);
    const ns = d.nameservers.map(n => `${esc(n.name)} (${esc(n.addresses.join(", "))})`).join(", ") || "no public host serves it yet";
    html += `<section class="domain" data-domain="${esc(d.domain)}"><h2>${esc(d.domain)}</h2><div class="summary">
      <div><b>Serial</b>${esc(d.serial)}</div><div><b>Nameservers</b>${ns}</div><div><b>ACME</b>${esc(d.acme_directory)}</div></div>
      <table class="records"><caption>Records of ${esc(d.domain)} as its nameservers serve them</caption><thead><tr><th scope="col">Name</th>
      <th scope="col">Type</th><th scope="col">TTL</th><th scope="col">Value</th><th scope="col">Source</th></tr></thead><tbody>`;
    for (const r of records) {
      html += `<tr><th scope="row">${esc(r.name)}</th><td>${esc(r.type)}</td><td>${esc(r.ttl)}</td><td class="value">${esc(r.value)}</td><td>${esc(r.source)}</td></tr>`;
    }
    html += "</tbody></table></section>";
  }
  html += `<h2>Delegations</h2><table id="keys"><caption>TSIG keys: each may change names in its scope only</caption><thead><tr>
    <th scope="col">Key</th><th scope="col">Scope</th><th scope="col">Algorithm</th><th scope="col">Member</th></tr></thead><tbody>`;
  for (const k of keys) html += `<tr><th scope="row">${esc(k.name)}</th><td>${esc(k.scope)}</td><td>${esc(k.algorithm)}</td><td>${esc(k.member ?? "—")}</td></tr>`;
  html += `</tbody></table><h2>Certificates</h2>`;
  if (!certs.length) html += `<p id="no-certs">No certificate yet.</p>`;
  else {
    html += `<table id="certs"><caption>Certificates, renewed at two thirds of their life</caption><thead><tr><th scope="col">Names</th>
      <th scope="col">State</th><th scope="col">Issuer</th><th scope="col">Expires</th><th scope="col">Last error</th></tr></thead><tbody>`;
    for (const c of certs) {
      const expiry = c.not_after ? certCell(new Date(c.not_after * 1000).toISOString(), c.not_after - c.not_before, now) : "<td>—</td>";
      html += `<tr data-cert="${esc(c.names[0])}"><th scope="row">${esc(c.names.join(", "))}</th><td class="cert-state-${esc(c.state)}">${esc(c.state)}</td>
        <td>${esc(c.issuer ?? "—")}</td>${expiry}<td class="error">${esc(c.last_error ?? "")}</td></tr>`;
    }
    html += "</tbody></table>";
  }
  show(html);
}

// The gateway: every route the public hosts serve, its replicas (green when healthy), its
// certificate, and its traffic summed over the public hosts: a bar per route for requests per
// second (scaled to the busiest route), errors in red.
async function gatewayView() {
  const info = await api("/v1/info");
  if (!info.island) { show(`<h1>Gateway</h1><p id="no-island">This host is in no island: the gateway is the island's public hosts'.</p>`); return; }
  const routes = await api("/v1/gateway/routes");
  if (!routes.length) {
    show(`<h1>Gateway</h1><p id="no-routes">No route yet. Give a service an <code>atoll.http.host</code> label (and <code>atoll.http.port</code>), or add one with <code>atoll gateway route add</code>.</p>`);
    return;
  }
  const busiest = Math.max(1, ...routes.map(r => r.requests_per_s));
  let html = `<h1>Gateway</h1><table id="routes"><caption>Routes of the public hosts, with their traffic over the last few seconds</caption><thead><tr>
    <th scope="col">Route</th><th scope="col">Hosts</th><th scope="col">Service</th><th scope="col">Replicas</th><th scope="col">Certificate</th>
    <th scope="col">Requests/s</th><th scope="col">Errors</th></tr></thead><tbody>`;
  for (const r of routes) {
    const where = r.listen_port ? `${esc(r.mode)} port ${esc(r.listen_port)}` : r.hosts.map(esc).join("<br>");
    const replicas = r.backends.map(b => `<span class="chip ${b.healthy ? "task-running" : "task-failed"}" title="${esc(b.replica + " at " + b.addr)}">${esc(b.host)}</span>`).join(" ") || "none";
    const width = Math.round(100 * r.requests_per_s / busiest);
    html += `<tr data-route="${esc(r.name)}"><th scope="row">${esc(r.name)}</th><td>${where}</td><td>${esc(r.service)}:${esc(r.port)}</td>
      <td class="replicas">${replicas}</td><td>${esc(r.certificate ?? "—")}</td>
      <td class="rate"><span class="bar" style="width:${width}%"></span> <span class="rps">${r.requests_per_s.toFixed(1)}</span> <small>(${esc(r.requests)} in all)</small></td>
      <td class="${r.errors ? "error" : ""}">${esc(r.errors)} <small>(${r.errors_per_s.toFixed(1)}/s)</small></td></tr>`;
    if (r.error) html += `<tr class="pending"><td></td><td colspan="6" class="error">Not served: ${esc(r.error)}</td></tr>`;
  }
  show(html + "</tbody></table>");
}

// Bundles: what this host runs for whom — owner, version, routes, instances, traffic, and
// the last failures in words.
async function bundlesView() {
  const bundles = await api("/v1/bundles");
  if (!bundles.length) {
    show(`<h1>Bundles</h1><p id="no-bundles">No bundle yet. Allow an author with <code>atoll bundle allow HANDLE</code>, then <code>atoll bundle run at://…</code>.</p>`);
    return;
  }
  let html = `<h1>Bundles</h1><table id="bundles"><caption>${bundles.some((b) => b.node) ? "The island's bundles" : "Bundles this host runs"}</caption><thead><tr>
    <th scope="col">Bundle</th><th scope="col">Owner</th><th scope="col">Version</th><th scope="col">Runtime</th><th scope="col">Routes</th>
    <th scope="col">Instances</th><th scope="col">Node</th><th scope="col">Requests</th><th scope="col">Errors</th><th scope="col">URL</th></tr></thead><tbody>`;
  for (const b of bundles) {
    const st = b.stats;
    html += `<tr data-bundle="${esc(b.name)}"><th scope="row">${esc(b.name)}</th><td title="${esc(b.did)}">${esc(b.handle ?? b.did)}</td>
      <td>${esc(b.version)}</td><td>${esc(b.runtime)}</td><td class="routes">${b.routes.map(esc).join("<br>")}</td>
      <td><span class="chip ${b.state === "running" ? "task-running" : "task-failed"}">${esc(b.state)}</span> ${esc(st.instances)} <small>(${esc(st.cold_starts)} cold starts)</small></td>
      <td>${esc(b.node ?? "this host")}</td><td>${esc(st.requests)}</td><td class="${st.errors ? "error" : ""}">${esc(st.errors)}</td>
      <td>${[...b.public_urls, ...(b.url ? [b.url] : [])].map((u) => `<a href="${esc(u)}">${esc(u)}</a>`).join("<br>") || "—"}</td></tr>`;
    for (const e of st.recent_errors) {
      html += `<tr class="pending"><td></td><td colspan="9" class="error">${esc(new Date(e.time * 1000).toLocaleTimeString())} ${esc(e.status)}: ${esc(e.message)} <small>(request ${esc(e.request_id)})</small></td></tr>`;
    }
  }
  show(html + "</tbody></table>");
}

function route() {
  const h = location.hash || "#/";
  if (h === "#/bundles") return bundlesView;
  if (h.startsWith("#/c/")) return () => containerView(decodeURIComponent(h.slice(4)));
  if (h === "#/images") return imagesView;
  if (h === "#/networks") return networksView;
  if (h === "#/island") return islandView;
  if (h === "#/names") return namesView;
  if (h === "#/gateway") return gatewayView;
  return containersView;
}
async function render() { try { await view(); } catch (e) { if (e.name !== "AbortError") fail(e); } }
function navigate(moved) {
  if (viewAbort) { viewAbort.abort(); viewAbort = null; }
  clearInterval(viewTimer); viewTimer = null;
  view = route(); shown = null;
  const here = "#/" + (location.hash.slice(2).split("/")[0] || "");
  for (const a of document.querySelectorAll("nav a")) {
    if (a.getAttribute("href") === here) a.setAttribute("aria-current", "page"); else a.removeAttribute("aria-current");
  }
  // After following a link, keyboard and screen-reader users start at the new view.
  render().then(() => { if (moved) main.focus({ preventScroll: true }); });
  if (view === islandView || view === namesView || view === gatewayView || view === bundlesView) viewTimer = setInterval(() => { if (!document.hidden) render(); }, POLL_MS);
}
window.addEventListener("hashchange", () => navigate(true));
navigate(false);

// Redraw on every event (debounced): state changes appear without a reload.
let pending = null;
ndjson("/v1/events", () => { clearTimeout(pending); pending = setTimeout(render, 150); }).catch(() => {});
