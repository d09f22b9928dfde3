// Orrery console: one vanilla module, no dependencies, no build step.
// Every call goes to this hub's REST API with the token the user pasted (kept in this tab's
// sessionStorage only), exactly as the CLI does; roles and team scoping apply unchanged.

const KEY = "orrery.token";
const $ = (sel) => document.querySelector(sel);
const view = () => $("#view");
let current = null;      // the render function of the page on screen
let rendering = false;
let pendingRender = false;
let jobsState = { filter: "", phase: "", sort: "createdAt", dir: -1 };

function esc(v) {
  return String(v ?? "").replace(/[&<>"']/g, (c) =>
    ({ "&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;" })[c]);
}
const fmtTime = (t) => (t ? new Date(t * 1000).toLocaleTimeString() : "");
const fmtDate = (t) => (t ? new Date(t * 1000).toLocaleString() : "");
function fmtDur(s) {
  if (s == null) return "";
  s = Math.max(0, Math.round(s));
  if (s < 90) return `${s}s`;
  if (s < 5400) return `${Math.round(s / 60)}m`;
  return `${(s / 3600).toFixed(1)}h`;
}
const money = (x) => (x == null ? "" : Number(x).toFixed(2));
const pill = (s) => `<span class="pill ${esc(s)}">${esc(s)}</span>`;

class AuthError extends Error {}

async function api(path) {
  const token = sessionStorage.getItem(KEY);
  const r = await fetch(path, { headers: { Authorization: `Bearer ${token}`, Accept: "application/json" } });
  if (r.status === 401) throw new AuthError("the token was refused (401)");
  if (!r.ok) {
    let detail = `${r.status}`;
    try { const b = await r.json(); detail = b.detail || b.title || detail; } catch (_) { /* not JSON */ }
    const e = new Error(typeof detail === "string" ? detail : JSON.stringify(detail));
    e.status = r.status;
    throw e;
  }
  return r.json();
}
// A route a role may not read (403) shows what it lacks instead of failing the page.
async function maybe(path) {
  try { return await api(path); } catch (e) {
    if (e instanceof AuthError) throw e;
    return { error: e.message };
  }
}

// ---- sign in -----------------------------------------------------------------------------

function showLogin(message) {
  sessionStorage.removeItem(KEY);
  $("#login").hidden = false;
  $("#nav").hidden = true;
  $("#logout").hidden = true;
  view().innerHTML = "";
  $("#login-error").textContent = message || "";
}

async function signIn(token) {
  sessionStorage.setItem(KEY, token);
  try { await api("/v1/clusters"); } catch (e) {
    showLogin(e instanceof AuthError ? "That token was refused." : `Cannot reach the hub: ${e.message}`);
    return;
  }
  $("#login").hidden = true;
  $("#nav").hidden = false;
  $("#logout").hidden = false;
  startLive();
  route();
}

// ---- pages -------------------------------------------------------------------------------

function gpuBar(total, free) {
  const used = total - free;
  const pct = total ? (100 * used) / total : 0;
  return `<div class="bar" title="${used} used of ${total}"><span data-w="${pct.toFixed(1)}"></span></div>`;
}

async function fleetPage() {
  const { items } = await api("/v1/clusters");
  const byRegion = {};
  const types = {};
  for (const c of items) {
    (byRegion[c.region || "(no region)"] ||= []).push(c);
    for (const [t, g] of Object.entries(c.gpus || {})) {
      const x = (types[t] ||= { total: 0, free: 0, lost: 0 });
      if (c.state === "Ready") { x.total += g.total; x.free += g.free; } else { x.lost += g.total; }
    }
  }
  const totals = Object.entries(types).map(([t, x]) => `
    <div class="card" data-gpu-type="${esc(t)}"><div class="muted">${esc(t)}</div>
      <div class="big">${x.total - x.free} / ${x.total}</div><div class="muted">used / total on Ready clusters${x.lost ? `, ${x.lost} on Lost` : ""}</div>
      ${gpuBar(x.total, x.free)}</div>`).join("");
  const regions = Object.keys(byRegion).sort().map((r) => `
    <div class="card region" data-region="${esc(r)}"><h3>${esc(r)}</h3>
      ${byRegion[r].sort((a, b) => a.name.localeCompare(b.name)).map((c) => `
        <div class="cluster" data-cluster="${esc(c.name)}" data-state="${esc(c.state)}">
          <b>${esc(c.name)}</b> ${pill(c.state)} <span class="muted">${esc(c.executor)}, ${c.nodes} node(s),
          ${c.runningSlices} slice(s) running, heartbeat ${fmtTime(c.lastHeartbeat)}</span>
          ${Object.entries(c.gpus || {}).map(([t, g]) => `
            <div class="gpus" data-gpu-type="${esc(t)}" data-free="${g.free}" data-total="${g.total}">
              ${esc(t)}: <b>${g.total - g.free}</b> used, <b>${g.free}</b> free of ${g.total}${gpuBar(g.total, g.free)}</div>`).join("")}
        </div>`).join("")}
    </div>`).join("");
  return `<h1>Fleet</h1><div class="totals">${totals || '<span class="muted">no GPUs reported</span>'}</div>
    <div class="regions">${regions || '<p class="muted">No cluster has joined yet.</p>'}</div>`;
}

async function queuesPage() {
  const { items } = await api("/v1/queues");
  const rows = items.map((q) => `
    <tr data-queue="${esc(q.name)}"><td><b>${esc(q.name)}</b>${q.configured ? "" : ' <span class="muted">(not configured)</span>'}</td>
      <td class="num">${q.weight}</td><td class="num">${q.guaranteed ?? "—"}</td><td>${esc(q.cohort ?? "—")}</td>
      <td class="num">${q.borrowLimit ?? "—"}</td><td class="num">${q.gpusInUse}</td><td class="num">${q.fairShareGpus}</td>
      <td class="num">${q.borrowing}</td><td class="num">${q.pending.length}</td></tr>`).join("");
  const pending = items.filter((q) => q.pending.length).map((q) => `
    <h2>${esc(q.name)}: waiting, in order</h2>
    <table><thead><tr><th class="num">#</th><th>job</th><th class="num">priority</th><th class="num">GPUs</th><th>waiting since</th><th>why</th></tr></thead>
    <tbody>${q.pending.map((p) => `<tr data-pending="${esc(p.id)}"><td class="num">${p.position}</td>
      <td><a class="mono" href="#/jobs/${encodeURIComponent(p.id)}">${esc(p.id)}</a></td><td class="num">${p.priority}</td>
      <td class="num">${p.gpus}</td><td>${fmtTime(p.createdAt)}</td><td>${esc(p.waiting ?? "")}</td></tr>`).join("")}</tbody></table>`).join("");
  return `<h1>Queues</h1>
    <table><thead><tr><th>queue</th><th class="num">weight</th><th class="num">guaranteed GPUs</th><th>cohort</th>
      <th class="num">borrow limit</th><th class="num">GPUs in use</th><th class="num">fair share (by weight)</th>
      <th class="num">borrowing</th><th class="num">pending</th></tr></thead><tbody>${rows}</tbody></table>
    <p class="muted">Positions follow the default offer order (priority, then submission) within a queue.</p>
    ${pending || '<p class="muted">No job is waiting.</p>'}`;
}

const JOB_COLS = [
  ["id", "job", (j) => j.id], ["phase", "phase", (j) => j.status.phase],
  ["team", "team", (j) => (j.metadata.labels || {}).team || ""], ["queue", "queue", (j) => j.spec.queue || "default"],
  ["priority", "priority", (j) => j.spec.priority || 0],
  ["gpus", "GPUs", (j) => (j.spec.slices || 1) * (j.spec.gpusPerSlice || 0)],
  ["createdAt", "submitted", (j) => j.status.createdAt],
];

async function jobsPage() {
  const { items } = await api("/v1/jobs?limit=2000");
  const st = jobsState;
  const needle = st.filter.toLowerCase();
  let rows = items.filter((j) => (!st.phase || j.status.phase === st.phase) &&
    (!needle || JSON.stringify([j.id, j.metadata, j.spec.queue, j.status.reason]).toLowerCase().includes(needle)));
  const col = JOB_COLS.find((c) => c[0] === st.sort) || JOB_COLS[6];
  rows.sort((a, b) => { const x = col[2](a), y = col[2](b); return (x < y ? -1 : x > y ? 1 : 0) * st.dir; });
  const head = JOB_COLS.map(([k, label]) =>
    `<th class="sortable ${st.sort === k ? (st.dir > 0 ? "sorted-asc" : "sorted-desc") : ""}" data-sort="${k}">${label}</th>`).join("");
  const body = rows.map((j) => `<tr data-job="${esc(j.id)}">
    <td><a class="mono" href="#/jobs/${encodeURIComponent(j.id)}">${esc(j.id)}</a></td><td>${pill(j.status.phase)}</td>
    <td>${esc((j.metadata.labels || {}).team || "")}</td><td>${esc(j.spec.queue || "default")}</td>
    <td class="num">${j.spec.priority || 0}</td><td class="num">${(j.spec.slices || 1) * (j.spec.gpusPerSlice || 0)}</td>
    <td>${fmtDate(j.status.createdAt)}</td></tr>
    ${j.status.phase === "Pending" && (j.status.waiting || j.status.reason) ? `<tr class="muted"><td></td><td colspan="6">waits: ${esc(j.status.waiting ? j.status.waiting.summary : j.status.reason)}</td></tr>` : ""}`).join("");
  const phases = ["", "Pending", "Running", "Succeeded", "Failed", "Cancelled"]
    .map((p) => `<option ${p === st.phase ? "selected" : ""} value="${p}">${p || "any phase"}</option>`).join("");
  return `<h1>Jobs</h1><div class="filters">
      <input id="job-search" type="search" placeholder="search id, name, labels, queue, reason" value="${esc(st.filter)}" size="40">
      <select id="job-phase">${phases}</select><span class="muted">${rows.length} of ${items.length}</span></div>
    <table id="jobs"><thead><tr>${head}</tr></thead><tbody>${body}</tbody></table>`;
}

function bindJobs() {
  const s = $("#job-search");
  if (!s) return;
  s.addEventListener("input", () => { jobsState.filter = s.value; rerender(true); });
  $("#job-phase").addEventListener("change", (e) => { jobsState.phase = e.target.value; rerender(); });
  for (const th of document.querySelectorAll("th[data-sort]")) {
    th.addEventListener("click", () => {
      const k = th.dataset.sort;
      jobsState = { ...jobsState, dir: jobsState.sort === k ? -jobsState.dir : 1, sort: k };
      rerender();
    });
  }
}

function timeline(attempts, job) {
  if (!attempts.length) return '<p class="muted">No attempt yet: the job has not been placed.</p>';
  const now = Date.now() / 1000;
  const t0 = Math.min(...attempts.map((a) => a.assignedAt));
  const t1 = Math.max(now > (job.status.finishedAt || 0) && !job.status.finishedAt ? now : job.status.finishedAt || now,
    ...attempts.map((a) => a.endedAt || now));
  const span = Math.max(1, t1 - t0);
  const pos = (t) => (100 * (t - t0)) / span;
  const bySlice = {};
  for (const a of attempts) (bySlice[a.index] ||= []).push(a);
  const rows = Object.keys(bySlice).sort((a, b) => a - b).map((i) => `
    <div class="tl-row" data-slice="${i}"><div class="tl-label">slice ${i}</div><div class="tl-track">
      ${bySlice[i].sort((a, b) => a.epoch - b.epoch).map((a) => {
        const end = a.endedAt || now;
        const title = `slice ${a.index} epoch ${a.epoch} on ${a.cluster}/${a.node} GPUs ${a.gpus.join(",")}: ${a.phase}` +
          `, placed ${fmtTime(a.assignedAt)}${a.startedAt ? `, running ${fmtTime(a.startedAt)}` : ""}` +
          `${a.endedAt ? `, ended ${fmtTime(a.endedAt)}` : ""}${a.reason ? ` (${a.reason})` : ""}`;
        return `<div class="tl-seg ${esc(a.phase)}" data-epoch="${a.epoch}" data-cluster="${esc(a.cluster)}" data-phase="${esc(a.phase)}"
          data-left="${pos(a.assignedAt).toFixed(2)}" data-w="${Math.max(0.5, pos(end) - pos(a.assignedAt)).toFixed(2)}"
          title="${esc(title)}">e${a.epoch} ${esc(a.cluster)} · ${esc(a.phase)}</div>`;
      }).join("")}</div></div>`).join("");
  return `<div class="timeline">${rows}<div class="tl-axis"><span>${fmtTime(t0)}</span><span>${fmtDur(span)}</span><span>${fmtTime(t1)}</span></div></div>`;
}

async function jobPage(id) {
  const enc = encodeURIComponent(id);
  const [job, attempts, events, usage] = await Promise.all([
    api(`/v1/jobs/${enc}`), api(`/v1/jobs/${enc}/attempts?limit=1000`), api(`/v1/jobs/${enc}/events?limit=1000`),
    maybe("/v1/usage"),
  ]);
  const st = job.status;
  const cost = usage.error ? null : (usage.jobs || []).find((u) => u.job === id);
  const waiting = st.waiting ? `<h2>Why it waits</h2><p id="waiting-summary">${esc(st.waiting.summary)}</p>
    <table id="waiting"><thead><tr><th>cluster</th><th>reason</th></tr></thead><tbody>
    ${Object.entries(st.waiting.clusters || {}).map(([c, r]) => `<tr data-cluster="${esc(c)}"><td>${esc(c)}</td><td>${esc(r)}</td></tr>`).join("")}
    </tbody></table>` : "";
  const attemptRows = attempts.map((a) => `<tr data-attempt="${a.index}-${a.epoch}"><td class="num">${a.index}</td><td class="num">${a.epoch}</td>
    <td>${esc(a.cluster)}</td><td class="mono">${esc(a.node)}</td><td>${esc(a.gpus.join(","))}</td><td>${pill(a.phase)}</td>
    <td>${fmtTime(a.assignedAt)}</td><td>${fmtTime(a.startedAt)}</td><td>${fmtTime(a.endedAt)}</td><td>${esc(a.reason ?? "")}${a.exitCode != null ? ` (exit ${a.exitCode})` : ""}</td></tr>`).join("");
  const eventRows = events.map((e) => `<tr data-event="${esc(e.kind)}"><td>${fmtTime(e.at)}</td><td>${esc(e.kind)}</td>
    <td class="num">${e.index ?? ""}</td><td class="num">${e.epoch ?? ""}</td><td>${esc(e.cluster ?? "")}</td><td>${esc(e.message)}</td></tr>`).join("");
  return `<h1><a href="#/jobs">Jobs</a> / <span class="mono">${esc(job.id)}</span> ${pill(st.phase)}</h1>
    <div class="grid2"><dl class="kv">
      <dt>queue</dt><dd>${esc(job.spec.queue || "default")}</dd><dt>team</dt><dd>${esc((job.metadata.labels || {}).team || "—")}</dd>
      <dt>shape</dt><dd>${job.spec.slices || 1} × ${job.spec.gpusPerSlice || 0} GPU ${esc([].concat(job.spec.gpuType || "any").join("|"))}, ${esc(job.spec.restartPolicy || "Gang")}</dd>
      <dt>submitted</dt><dd>${fmtDate(st.createdAt)}</dd><dt>started</dt><dd>${fmtDate(st.startedAt) || "—"}</dd>
      <dt>finished</dt><dd>${fmtDate(st.finishedAt) || "—"}</dd>
      <dt>restarts</dt><dd>${st.restarts}</dd><dt>checkpoint</dt><dd id="checkpoint">${st.checkpointStep != null ? `step ${st.checkpointStep}` : "—"}</dd>
      <dt>cost so far</dt><dd id="cost">${cost ? `${money(cost.cost)} (${fmtDur(cost.gpuSeconds)} GPU time)` : usage.error ? `<span class="muted">${esc(usage.error)}</span>` : "0.00"}</dd>
      ${st.reason ? `<dt>reason</dt><dd>${esc(st.reason)}</dd>` : ""}
    </dl><div>${waiting}</div></div>
    <h2>Slices across epochs and clusters</h2>${timeline(attempts, job)}
    <h2>Attempts</h2><table id="attempts"><thead><tr><th class="num">slice</th><th class="num">epoch</th><th>cluster</th><th>node</th><th>GPUs</th><th>phase</th>
      <th>placed</th><th>running</th><th>ended</th><th>reason</th></tr></thead><tbody>${attemptRows}</tbody></table>
    <h2>Events</h2><table id="events"><thead><tr><th>at</th><th>kind</th><th class="num">slice</th><th class="num">epoch</th><th>cluster</th><th>message</th></tr></thead>
      <tbody>${eventRows}</tbody></table>`;
}

async function usagePage() {
  const [usage, budgets] = await Promise.all([maybe("/v1/usage"), maybe("/v1/budgets")]);
  if (usage.error) return `<h1>Usage</h1><p class="error">${esc(usage.error)}</p>`;
  const teams = Object.entries(usage.teams || {}).map(([t, u]) => `<tr data-team="${esc(t)}"><td>${esc(t)}</td>
    <td class="num">${fmtDur(u.gpuSeconds)}</td><td class="num">${money(u.cost)}</td>
    <td class="num">${(usage.gpusInUse.byTeam || {})[t] || 0}</td></tr>`).join("");
  const brows = (budgets.items || []).map((b) => `<tr data-budget="${esc(b.team)}"><td>${esc(b.team)}</td><td>${esc(b.policy)}</td>
    <td>${esc(b.period)}</td><td class="num">${money(b.spent)} / ${money(b.limit)}</td>
    <td class="budget-cell"><div class="bar budget ${b.fraction > 1 ? "over" : ""}"><span data-w="${Math.min(100, 100 * (b.fraction || 0)).toFixed(1)}"></span></div></td>
    <td>${esc(b.action)}</td></tr>`).join("");
  return `<h1>Usage and spend</h1>
    <h2>Budgets (current period)</h2>${budgets.error ? `<p class="error">${esc(budgets.error)}</p>` : brows ?
      `<table><thead><tr><th>team</th><th>policy</th><th>period</th><th class="num">spent / limit</th><th></th><th>past it</th></tr></thead><tbody>${brows}</tbody></table>` :
      '<p class="muted">No budget in force.</p>'}
    <h2>By team (all time)</h2><table><thead><tr><th>team</th><th class="num">GPU time</th><th class="num">cost</th><th class="num">GPUs in use</th></tr></thead>
    <tbody>${teams}</tbody></table>`;
}

async function servicesPage() {
  const list = await maybe("/v1/services");
  if (list.error) return `<h1>Services</h1><p class="error">${esc(list.error)}</p>`;
  const ms = (x) => (x == null ? "" : `${(1000 * x).toFixed(0)} ms`);
  const rows = (Array.isArray(list) ? list : []).map((sv) => {
    const st = sv.status;
    const where = (st.replicas || []).map((r) => `<span class="mono" data-replica="${esc(r.job)}">${esc(r.cluster || "unplaced")}${r.region ? ` (${esc(r.region)})` : ""} ${pill(r.phase)}</span>`).join("<br>");
    return `<tr data-service="${esc(sv.name)}"><td>${esc(sv.name)}</td><td>${pill(st.phase)}</td>
      <td class="num" data-ready>${st.ready} / ${st.desired}</td><td class="num">${Number(st.concurrency || 0).toFixed(1)}</td>
      <td class="num">${Number(st.requestsPerS || 0).toFixed(1)}</td><td class="num">${ms(st.latencyP95S)}</td>
      <td>${where}</td><td>${esc(st.reason || "")}</td></tr>`;
  }).join("");
  return `<h1>Inference services</h1>
    ${rows ? `<table><thead><tr><th>service</th><th>phase</th><th class="num">ready / desired</th><th class="num">in flight</th>
      <th class="num">req/s</th><th class="num">p95</th><th>replicas</th><th>reason</th></tr></thead><tbody>${rows}</tbody></table>` :
      '<p class="muted">No inference service (<code>orrery serve FILE</code>).</p>'}`;
}

async function policiesPage() {
  const p = await api("/v1/policies");
  const rows = (p.entries || []).map((e) => `<tr data-policy="${esc(e.name)}"><td>${esc(e.kind)}</td><td>${esc(e.name)}</td>
    <td class="mono">${esc(e.file)}:${e.line}</td><td class="mono">${esc((e.sha256 || "").slice(0, 12))}</td></tr>`).join("");
  return `<h1>Policies in force</h1><p class="muted">folder ${esc(p.folder || "(none)")}, digest <span class="mono">${esc(p.digest || "")}</span></p>
    ${rows ? `<table><thead><tr><th>kind</th><th>name</th><th>where</th><th>sha256</th></tr></thead><tbody>${rows}</tbody></table>` : '<p class="muted">No policy is loaded.</p>'}`;
}

// ---- routing and live updates ------------------------------------------------------------

function pageFor(hash) {
  const m = hash.match(/^#\/jobs\/(.+)$/);
  if (m) return ["jobs", () => jobPage(decodeURIComponent(m[1]))];
  const name = (hash.match(/^#\/(\w+)/) || [])[1] || "fleet";
  const pages = { fleet: fleetPage, queues: queuesPage, jobs: jobsPage, services: servicesPage, usage: usagePage, policies: policiesPage };
  return [name in pages ? name : "fleet", pages[name] || fleetPage];
}

async function render(keepFocus) {
  if (!current) return;
  if (rendering) { pendingRender = true; return; }
  rendering = true;
  try {
    const focused = keepFocus && document.activeElement && document.activeElement.id;
    const caret = focused && document.activeElement.selectionStart;
    const html = await current();
    view().innerHTML = html;
    // The CSP refuses inline style attributes; sizes are set through the CSSOM instead.
    for (const el of view().querySelectorAll("[data-w]")) el.style.width = `${el.dataset.w}%`;
    for (const el of view().querySelectorAll("[data-left]")) el.style.left = `${el.dataset.left}%`;
    view().dataset.loaded = String(Date.now());
    bindJobs();
    if (focused && $(`#${focused}`)) { const el = $(`#${focused}`); el.focus(); if (caret != null) el.setSelectionRange(caret, caret); }
  } catch (e) {
    if (e instanceof AuthError) { showLogin("Your token was refused; sign in again."); return; }
    view().innerHTML = `<p class="error">${esc(e.message)}</p>`;
  } finally {
    rendering = false;
    if (pendingRender) { pendingRender = false; render(keepFocus); }
  }
}
const rerender = (keepFocus) => render(keepFocus);

function route() {
  if (!sessionStorage.getItem(KEY)) { showLogin(); return; }
  const [name, fn] = pageFor(location.hash);
  for (const a of document.querySelectorAll("header nav a")) a.classList.toggle("active", a.getAttribute("href") === `#/${name}`);
  current = fn;
  render();
}

// Server-sent events read with fetch, since EventSource cannot send the Bearer header. On any
// failure it falls back to polling, and tries the stream again later.
let liveCtl = null;
async function startLive() {
  if (liveCtl) liveCtl.abort();
  const ctl = (liveCtl = new AbortController());
  const dot = $("#live");
  while (!ctl.signal.aborted && sessionStorage.getItem(KEY)) {
    try {
      const r = await fetch("/v1/stream", { headers: { Authorization: `Bearer ${sessionStorage.getItem(KEY)}` }, signal: ctl.signal });
      if (!r.ok || !r.body) throw new Error(`stream ${r.status}`);
      dot.className = "live on"; dot.textContent = "live";
      const reader = r.body.pipeThrough(new TextDecoderStream()).getReader();
      let buf = "";
      for (;;) {
        const { value, done } = await reader.read();
        if (done) break;
        buf += value;
        let cut;
        while ((cut = buf.indexOf("\n\n")) >= 0) {
          const block = buf.slice(0, cut); buf = buf.slice(cut + 2);
          if (/^event: (change|tick)/m.test(block) && document.activeElement?.id !== "job-search") render();
        }
      }
    } catch (e) {
      if (ctl.signal.aborted) return;
      dot.className = "live"; dot.textContent = "polling";
      render();
    }
    await new Promise((ok) => setTimeout(ok, 3000));
  }
}

window.addEventListener("hashchange", route);
window.addEventListener("DOMContentLoaded", () => {
  $("#login-form").addEventListener("submit", (e) => { e.preventDefault(); signIn($("#token").value.trim()); });
  $("#logout").addEventListener("click", () => { if (liveCtl) liveCtl.abort(); showLogin(); });
  if (sessionStorage.getItem(KEY)) signIn(sessionStorage.getItem(KEY)); else showLogin();
});
