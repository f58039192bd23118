// The asyncq dashboard: a hash-routed page over the JSON API, updated by server-sent events.
"use strict";

const CSRF = document.querySelector('meta[name="csrf"]').content;
const STATES = ["queued", "scheduled", "running", "dead"];
const COLS = ["scheduled", "queued", "running", "dead", "succeeded_total", "failed_total"];
let overview = null;   // the latest snapshot from /api/overview or the event stream
let skew = 0;          // broker clock minus this browser's, in seconds
let cursors = [null];  // cursors of the job pages seen in the current listing
let jobsKey = "";      // which listing `cursors` belongs to

const $ = (sel) => document.querySelector(sel);
const esc = (v) => String(v ?? "").replace(/[&<>"']/g,
  (c) => ({"&": "&amp;", "<": "&lt;", ">": "&gt;", '"': "&quot;", "'": "&#39;"}[c]));
const enc = encodeURIComponent;
const now = () => Date.now() / 1000 + skew;

function ago(t) {
  if (t == null) return "";
  const d = t - now(), s = Math.abs(d);
  const text = s < 120 ? `${s.toFixed(0)}s` : s < 7200 ? `${(s / 60).toFixed(0)}m` : `${(s / 3600).toFixed(1)}h`;
  return d > 0 ? `in ${text}` : `${text} ago`;
}
const when = (t) => t == null ? "" :
  `<span title="${esc(new Date(t * 1000).toISOString())}">${esc(ago(t))}</span>`;
const state = (s) => `<span class="state ${esc(s)}">${esc(s)}</span>`;
const json = (v) => `<pre>${esc(JSON.stringify(v, null, 2))}</pre>`;

function setHTML(el, html) { if (el && el.dataset.html !== html) { el.innerHTML = html; el.dataset.html = html; } }

async function api(path) {
  const r = await fetch(path, {headers: {Accept: "application/json"}});
  const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  if (r.status === 401) location.href = "login";
  if (!r.ok) throw new Error(body.error || `HTTP ${r.status}`);
  return body;
}

async function act(name, fields, ask) {
  if (ask && !confirm(ask)) return;
  const r = await fetch(`api/action/${name}`, {
    method: "POST",
    headers: {"Content-Type": "application/x-www-form-urlencoded", "X-CSRF-Token": CSRF},
    body: new URLSearchParams({...fields, csrf: CSRF}),
  });
  const body = await r.json().catch(() => ({error: `HTTP ${r.status}`}));
  flash(body.message || body.error, !r.ok);
  render();
}

function flash(text, bad) {
  const el = $("#flash");
  el.textContent = text; el.className = bad ? "err" : ""; el.hidden = false;
}

function showBroker(snap) {
  const el = $("#banner");
  const b = snap && snap.broker;
  el.hidden = !b || b.ok;
  if (b && !b.ok) el.textContent = `Broker unreachable: ${b.error}`;
}

// ---- throughput ---------------------------------------------------------------------------

function rates(rows) {  // rows: [t, succeeded_total, failed_total, queued, running, dead]
  const out = [];
  for (let i = 1; i < rows.length; i++) {
    const dt = rows[i][0] - rows[i - 1][0];
    const done = rows[i][1] - rows[i - 1][1] + rows[i][2] - rows[i - 1][2];
    out.push(dt > 0 ? Math.max(done, 0) / dt : 0);
  }
  return out;
}

function spark(values, w = 120, h = 22) {
  if (values.length < 2) return "";
  const max = Math.max(...values, 1e-9);
  const pts = values.map((v, i) => `${(i / (values.length - 1) * w).toFixed(1)},${(h - v / max * (h - 2) - 1).toFixed(1)}`);
  return `<svg class="spark" width="${w}" height="${h}" aria-hidden="true"><polyline fill="none" stroke="#2459a8" stroke-width="1.5" points="${pts.join(" ")}"/></svg>`;
}

// ---- views --------------------------------------------------------------------------------

function countCells(c) { return COLS.map((k) => `<td class="n" data-count="${k}">${c[k] ?? 0}</td>`).join(""); }

function queueRows(q) {
  const hist = (overview.history || {})[q.name] || [];
  const r = rates(hist);
  const rate = r.length ? `${r[r.length - 1].toFixed(1)}/s` : "";
  const pause = q.paused ? ' <span class="paused">paused</span>' : "";
  let html = `<tr data-queue="${esc(q.name)}"><td><a href="#/queue/${enc(q.name)}">${esc(q.name)}</a>${pause}</td>` +
    `${countCells(q.counts)}<td>${spark(r)} ${rate}</td></tr>`;
  for (const p of q.partitions) {
    const pp = p.paused ? ' <span class="paused">paused</span>' : "";
    html += `<tr class="part"><td>#${esc(p.name.split("#")[1])}${pp}</td>${countCells(p.counts)}<td></td></tr>`;
  }
  return html;
}

function queueTable(queues) {
  const head = COLS.map((c) => `<th class="n">${c.replace("_total", " (total)")}</th>`).join("");
  return `<table id="queues"><tr><th>queue</th>${head}<th>done per second</th></tr>` +
    (queues.map(queueRows).join("") || `<tr><td colspan="8" class="muted">no queues yet</td></tr>`) + "</table>";
}

function workerTable(workers) {
  const rows = workers.map((w) => `<tr><td><code>${esc(w.id)}</code></td><td>${esc(w.host)} pid ${esc(w.pid)}</td>` +
    `<td>${esc(Object.keys(w.queues || {}).join(", "))}</td><td>${when(w.last_seen)}</td><td>` +
    w.running.map((j) => `<a href="#/job/${enc(j.queue)}/${enc(j.id)}">${esc(j.task)}</a>`).join(", ") + "</td></tr>");
  return `<table id="workers"><tr><th>worker</th><th>where</th><th>queues</th><th>heartbeat</th><th>running</th></tr>` +
    (rows.join("") || `<tr><td colspan="5" class="muted">no live workers</td></tr>`) + "</table>";
}

function scheduleTable(schedules) {
  const rows = schedules.map((s) => {
    const d = s.definition, every = d.cron || (d.every ? `every ${d.every}s` : "?");
    const change = s.paused ? "schedule_resume" : "schedule_pause";
    return `<tr data-schedule="${esc(s.name)}"><td>${esc(s.name)}</td><td>${esc(s.queue)}</td><td>${esc(d.task)}</td>` +
      `<td>${esc(every)}</td><td>${s.paused ? '<span class="paused">paused</span>' : when(s.next_fire)}</td>` +
      `<td class="n">${s.fired}</td><td><button data-act="${change}" data-queue="${esc(s.queue)}" data-name="${esc(s.name)}">` +
      `${s.paused ? "Resume" : "Pause"}</button></td></tr>`;
  });
  return `<table id="schedules"><tr><th>schedule</th><th>queue</th><th>task</th><th>when</th><th>next</th><th class="n">fired</th><th></th></tr>` +
    (rows.join("") || `<tr><td colspan="7" class="muted">no schedules</td></tr>`) + "</table>";
}

function viewOverview() {
  if (!overview.queues) return setHTML($("#view"), "<h1>Queues</h1><p class=muted>No data: the broker is unreachable.</p>");
  setHTML($("#view"), `<h1>Queues</h1>${queueTable(overview.queues)}<h2>Workers</h2>${workerTable(overview.workers)}` +
    `<h2>Schedules</h2>${scheduleTable(overview.schedules)}`);
}

function jobRow(j) {
  const acts = [];
  if (j.state === "dead") acts.push(`<button data-act="retry" data-queue="${esc(j.queue)}" data-id="${esc(j.id)}">Retry</button>`);
  if (["queued", "scheduled", "running", "failed", "waiting"].includes(j.state))
    acts.push(`<button data-act="cancel" data-queue="${esc(j.queue)}" data-id="${esc(j.id)}">Cancel</button>`);
  if (j.state !== "running")
    acts.push(`<button class="danger" data-act="delete" data-queue="${esc(j.queue)}" data-id="${esc(j.id)}" data-ask="Delete job ${esc(j.id)}?">Delete</button>`);
  const part = j.queue.includes("#") ? ` <span class="muted">#${esc(j.queue.split("#")[1])}</span>` : "";
  return `<tr data-job="${esc(j.id)}"><td><a href="#/job/${enc(j.queue)}/${enc(j.id)}"><code>${esc(j.id)}</code></a>${part}</td>` +
    `<td>${esc(j.task)}</td><td>${state(j.state)}</td><td class="n">${j.attempts}/${j.max_attempts}</td>` +
    `<td>${when(j.enqueued_at)}</td><td>${esc(j.error)}</td><td>${acts.join(" ")}</td></tr>`;
}

async function viewQueue(name, params) {
  const q = (overview.queues || []).find((x) => x.name === name) || {name, counts: {}, partitions: [], paused: false};
  const st = STATES.includes(params.get("state")) ? params.get("state") : "queued";
  const task = params.get("task") || "";
  const key = `${name}|${st}|${task}`;
  if (key !== jobsKey) { jobsKey = key; cursors = [null]; }
  const page = Number(params.get("page") || 0);
  const tabs = STATES.map((s) => `<a class="${s === st ? "on" : ""}" href="#/queue/${enc(name)}?state=${s}&task=${enc(task)}">` +
    `${s} (${q.counts[s] ?? 0})</a>`).join("");
  const pause = q.paused ? "resume" : "pause";
  const view = $("#view");
  if (view.dataset.page !== key) {
    view.dataset.page = key; view.dataset.html = "";
    view.innerHTML = `<h1>Queue ${esc(name)}</h1><div id="qhead"></div><div class="actions">` +
      `<span id="pausebtn"></span>` +
      `<button data-act="retry" data-queue="${esc(name)}" data-ask="Retry every dead job of ${esc(name)}?">Retry all dead</button>` +
      `<button class="danger" data-act="purge" data-queue="${esc(name)}" data-ask="Delete every queued, scheduled and dead job of ${esc(name)}?">Purge</button></div>` +
      `<div class="tabs" id="tabs"></div><form id="filter"><input name="task" placeholder="task contains" value="${esc(task)}"> <button>Filter</button></form>` +
      `<div id="jobs">Loading…</div><div id="pager"></div><h2>Schedules</h2><div id="qsched"></div>`;
  }
  const mine = (overview.schedules || []).filter((s) => s.queue.split("#")[0] === name);
  setHTML($("#qsched"), scheduleTable(mine));
  setHTML($("#qhead"), queueTable([q]));
  setHTML($("#pausebtn"), `<button data-act="${pause}" data-queue="${esc(name)}">${q.paused ? "Resume queue" : "Pause queue"}</button>`);
  setHTML($("#tabs"), tabs);
  const cursor = cursors[page] ?? null;
  let res;
  try {
    res = await api(`api/jobs?queue=${enc(name)}&state=${st}&task=${enc(task)}&cursor=${enc(cursor || "")}`);
  } catch (e) { return setHTML($("#jobs"), `<p class="err">${esc(e.message)}</p>`); }
  if (res.cursor) cursors[page + 1] = res.cursor;
  setHTML($("#jobs"), `<table><tr><th>id</th><th>task</th><th>state</th><th class="n">tries</th><th>enqueued</th><th>error</th><th></th></tr>` +
    (res.jobs.map(jobRow).join("") || `<tr><td colspan="7" class="muted">no ${esc(st)} jobs</td></tr>`) + "</table>");
  const base = `#/queue/${enc(name)}?state=${st}&task=${enc(task)}`;
  setHTML($("#pager"), (page > 0 ? `<a href="${base}&page=${page - 1}">previous</a> ` : "") +
    (res.cursor ? `<a href="${base}&page=${page + 1}">next page</a>` : ""));
}

let jobStream = null;  // {key, es}: the event stream of the job shown, while it runs

function followJob(queue, id, final) {
  const key = `${queue}\t${id}`;
  if (jobStream && (jobStream.key !== key || final)) { jobStream.es.close(); jobStream = null; }
  if (jobStream || final) return;
  const es = new EventSource(`api/job/events?queue=${enc(queue)}&id=${enc(id)}`);
  const stop = () => { es.close(); if (jobStream && jobStream.es === es) jobStream = null; };
  es.addEventListener("job", () => render());
  es.addEventListener("end", () => { stop(); render(); });
  es.addEventListener("gone", stop);
  jobStream = {key, es};
}

async function viewJob(queue, id) {
  let d;
  try { d = await api(`api/job?queue=${enc(queue)}&id=${enc(id)}`); }
  catch (e) { return setHTML($("#view"), `<h1>Job ${esc(id)}</h1><p class="err">${esc(e.message)}</p>`); }
  const j = d.job, base = queue.split("#")[0];
  followJob(queue, id, ["succeeded", "dead", "cancelled"].includes(j.state));
  const why = d.why.length ? `<h2>Why is it still waiting?</h2><ul class="why">` +
    d.why.map((w) => `<li data-why="${esc(w.kind)}"><span class="kind">${esc(w.kind)}</span>: ${esc(w.text)}</li>`).join("") + "</ul>" : "";
  const args = d.args.hidden ? `<p class="muted" id="args">${esc(d.args.hidden)}</p>` :
    `<div id="args">${json({args: d.args.args, kwargs: d.args.kwargs})}</div>`;
  const err = j.error ? `<h2>${["dead", "failed"].includes(j.state) ? "Error" : "Last error"}</h2><p><b>${esc(j.error.type)}</b>: ${esc(j.error.message)} ${j.error.reason ? `[${esc(j.error.reason)}]` : ""}</p>` +
    (j.error.traceback ? `<pre id="traceback">${esc(j.error.traceback)}</pre>` : "") : "";
  const timeline = d.timeline.map((e) => `<tr><td>${esc(new Date(e.at * 1000).toISOString())}</td>` +
    `<td class="muted">${esc(ago(e.at))}</td><td>${esc(e.what)}</td></tr>`).join("");
  setHTML($("#view"), `<h1>Job <code>${esc(j.id)}</code></h1>` +
    `<p><a href="#/queue/${enc(base)}?state=${["queued", "scheduled", "running", "dead"].includes(j.state) ? j.state : "queued"}">← queue ${esc(base)}</a></p>` +
    `<dl><dt>state</dt><dd id="jobstate">${state(j.state)}</dd><dt>task</dt><dd>${esc(j.task)}</dd><dt>queue</dt><dd>${esc(j.queue)}</dd>` +
    `<dt>enqueued</dt><dd>${when(j.enqueued_at)}</dd>` + (j.due_at ? `<dt>due</dt><dd>${when(j.due_at)}</dd>` : "") +
    `<dt>attempts</dt><dd>${j.attempts} of ${j.max_attempts}</dd><dt>priority</dt><dd>${j.priority}</dd><dt>${j.state === "running" ? "worker" : "last worker"}</dt><dd>${esc(j.worker)}</dd>` +
    (d.flow ? `<dt>flow</dt><dd>${esc(d.flow.text)}</dd>` : "") + `</dl>` +
    `<div class="actions">${jobRow(j).match(/<button[\s\S]*?<\/button>/g)?.join("") || ""}</div>` +
    why + `<h2>Arguments</h2>${args}` + (j.result != null ? `<h2>Result</h2>${json(j.result)}` : "") + err +
    `<h2>Timeline</h2><table id="timeline">${timeline}</table>`);
}

// ---- routing and live updates -------------------------------------------------------------

let rendering = null, again = false;
async function render() {
  if (rendering) { again = true; return rendering; }
  rendering = (async () => {
    do {
      again = false;
      if (!overview) { overview = await api("api/overview").catch((e) => ({broker: {ok: false, error: e.message}})); }
      showBroker(overview);
      const [path, query] = location.hash.replace(/^#/, "").split("?");
      const parts = path.split("/").filter(Boolean).map(decodeURIComponent);
      const params = new URLSearchParams(query || "");
      if (parts[0] !== "queue") $("#view").dataset.page = "";
      if (parts[0] !== "job" && jobStream) { jobStream.es.close(); jobStream = null; }
      if (parts[0] === "queue" && parts[1]) await viewQueue(parts[1], params);
      else if (parts[0] === "job" && parts[2]) await viewJob(parts[1], parts[2]);
      else viewOverview();
    } while (again);
  })();
  try { await rendering; } finally { rendering = null; }
}

document.addEventListener("click", (ev) => {
  const b = ev.target.closest("button[data-act]");
  if (!b) return;
  ev.preventDefault();
  const f = {};
  for (const k of ["queue", "id", "name"]) if (b.dataset[k]) f[k] = b.dataset[k];
  act(b.dataset.act, f, b.dataset.ask);
});

document.addEventListener("submit", (ev) => {
  ev.preventDefault();
  if (ev.target.id === "filter") {
    const [path, query] = location.hash.split("?");
    const params = new URLSearchParams(query || "");
    params.set("task", ev.target.task.value); params.delete("page");
    location.hash = `${path}?${params}`;
  } else if (ev.target.id === "search") findJob(ev.target.elements.q.value);
});

async function findJob(id) {
  id = (id || "").trim();
  if (!id) return;
  try {
    const res = await api(`api/jobs?id=${enc(id)}`);
    if (res.jobs.length) location.hash = `#/job/${enc(res.jobs[0].queue)}/${enc(id)}`;
    else flash(`no job ${id} in any queue`, true);
  } catch (e) { flash(e.message, true); }
}

function listen() {
  const es = new EventSource("api/events");
  es.addEventListener("overview", (ev) => {
    overview = JSON.parse(ev.data);
    if (overview.now) skew = overview.now - Date.now() / 1000;
    $("#live").textContent = "live"; $("#live").className = "on";
    render();
  });
  es.onerror = () => { $("#live").textContent = "reconnecting…"; $("#live").className = ""; };
}

window.addEventListener("hashchange", () => { $("#flash").hidden = true; render(); });
render();
listen();
