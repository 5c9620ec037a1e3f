// The dashboard: plain JavaScript, no dependencies. It talks to the daemon's own API under
// /api (session cookie; state changes carry the CSRF token) and follows /api/v1/events to
// redraw when something changes.
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
function show(html) { main.innerHTML = html; }
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

function route() {
  const h = location.hash || "#/";
  if (h.startsWith("#/c/")) return () => containerView(decodeURIComponent(h.slice(4)));
  if (h === "#/images") return imagesView;
  if (h === "#/networks") return networksView;
  return containersView;
}
async function render() { try { await view(); } catch (e) { if (e.name !== "AbortError") fail(e); } }
function navigate() { if (viewAbort) { viewAbort.abort(); viewAbort = null; } view = route(); render(); }
window.addEventListener("hashchange", navigate);
navigate();

// Redraw on every event (debounced): state changes appear without a reload.
let pending = null;
ndjson("/v1/events", () => { clearTimeout(pending); pending = setTimeout(render, 150); }).catch(() => {});
