// The admin dashboard: plain JavaScript against the admin API, no framework, no CDN.
"use strict";
const $ = (id) => document.getElementById(id);
let token = sessionStorage.getItem("mcp-admin-token");
let last = null; // previous overview sample, for rates

function cell(text, cls) {
  const td = document.createElement("td");
  td.textContent = text === null || text === undefined ? "—" : String(text);
  if (cls) td.className = cls;
  return td;
}
function fill(tableId, rows) {
  const body = $(tableId).querySelector("tbody");
  body.replaceChildren(...rows.map((cells) => {
    const tr = document.createElement("tr");
    tr.append(...cells);
    return tr;
  }));
}
async function api(path, options = {}) {
  const headers = Object.assign({}, options.headers || {}, { authorization: "Bearer " + token });
  const r = await fetch(path, Object.assign({}, options, { headers }));
  if (r.status === 401 || r.status === 403) { signOut("Your session ended: sign in again."); throw new Error("auth"); }
  const body = await r.json().catch(() => ({}));
  return { status: r.status, body };
}
function signOut(message) {
  token = null;
  sessionStorage.removeItem("mcp-admin-token");
  $("app").hidden = true; $("login-view").hidden = false; $("logout").hidden = true;
  $("login-error").textContent = message || "";
}
function signedIn() {
  $("login-view").hidden = true; $("app").hidden = false; $("logout").hidden = false;
  refresh(); loadLogs(); loadUsers(); loadConfig();
}

async function refresh() {
  if (!token) return;
  try {
    const [{ body: ov }, { body: pools }] = await Promise.all([api("/admin/overview"), api("/admin/pools")]);
    const now = Date.now();
    const rate = (kind, key, total) => {
      if (!last) return null;
      const prev = last[kind][key];
      const secs = (now - last.at) / 1000;
      return prev === undefined || secs <= 0 ? null : ((total - prev) / secs).toFixed(1);
    };
    const sample = { at: now, routes: {}, tools: {} };
    fill("routes", ov.routes.map((r) => {
      sample.routes[r.route] = r.requests;
      return [cell(r.route), cell(rate("routes", r.route, r.requests)), cell(r.requests),
        cell(r.errors, r.errors > 0 ? "bad" : "ok"),
        cell(r.p50_ms === null ? null : r.p50_ms.toFixed(2)), cell(r.p99_ms === null ? null : r.p99_ms.toFixed(2))];
    }));
    fill("tools", ov.tools.map((t) => {
      sample.tools[t.tool] = t.calls;
      return [cell(t.tool), cell(rate("tools", t.tool, t.calls)), cell(t.calls)];
    }));
    last = sample;
    fill("workers", pools.pools.flatMap((p) => p.workers.map((w) => [
      cell(p.name), cell(w.id), cell(w.address),
      cell(w.healthy ? "healthy" : "down", w.healthy ? "ok" : "bad"),
      cell(w.inflight), cell(w.restarts), cell(w.sessions_opened)])));
  } catch (e) { /* shown by api() */ }
}

async function loadLogs(event) {
  if (event) event.preventDefault();
  const q = new URLSearchParams({ limit: "50" });
  for (const [id, name] of [["f-route", "route"], ["f-tool", "tool"], ["f-status", "status"], ["f-user", "user"]]) {
    const v = $(id).value.trim();
    if (v) q.set(name, v);
  }
  const { status, body } = await api("/admin/logs?" + q);
  if (status !== 200) { $("logs-note").textContent = body.error || "request logs are not available"; fill("logs", []); return; }
  $("logs-note").textContent = "";
  const rows = body.records || body.logs || [];
  fill("logs", rows.map((r) => [cell(new Date(r.at).toLocaleTimeString()), cell(r.user_id), cell(r.route),
    cell(r.rpc_method || r.http_method), cell(r.tool), cell(r.status, r.status >= 400 ? "bad" : "ok"),
    cell((r.latency_us / 1000).toFixed(1))]));
}

async function loadUsers() {
  const { status, body } = await api("/admin/users?limit=100");
  if (status !== 200) { $("users-note").textContent = body.error || ""; return; }
  const rows = [];
  for (const u of body.users) {
    const keys = await api("/admin/users/" + encodeURIComponent(u.id) + "/api-keys");
    const names = (keys.body.keys || []).map((k) => k.name + (k.revoked_at ? " (revoked)" : "")).join(", ");
    rows.push([cell(u.email), cell(u.roles.join(", ")), cell(u.disabled ? "yes" : "no"), cell(names || "—")]);
  }
  fill("users", rows);
}

async function loadConfig() {
  const { body } = await api("/admin/config");
  $("config-version").textContent = body.version;
  $("config-source").textContent = body.source;
  $("config-text").textContent = body.text;
  $("reload-error-box").hidden = !body.last_error;
  $("reload-error").textContent = body.last_error || "";
}

async function reload() {
  $("reload-result").textContent = "Reloading…";
  const { status, body } = await api("/admin/reload", { method: "POST" });
  $("reload-result").textContent = status === 200
    ? "Reloaded: version " + body.version
    : "Reload refused; the previous configuration stays in force.";
  await loadConfig();
}

$("login-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  $("login-error").textContent = "";
  const r = await fetch("/admin/login", { method: "POST", headers: { "content-type": "application/json" },
    body: JSON.stringify({ email: $("email").value, password: $("password").value }) });
  const body = await r.json().catch(() => ({}));
  if (r.status !== 200) { $("login-error").textContent = body.error || "Sign-in failed."; return; }
  token = body.token; sessionStorage.setItem("mcp-admin-token", token);
  $("who").textContent = $("email").value;
  signedIn();
});
$("token-form").addEventListener("submit", (e) => {
  e.preventDefault();
  token = $("token").value; sessionStorage.setItem("mcp-admin-token", token);
  signedIn();
});
$("logout").addEventListener("click", () => signOut(""));
$("log-filter").addEventListener("submit", loadLogs);
$("reload").addEventListener("click", reload);
setInterval(refresh, 2000);
if (token) signedIn();
