// The shardex operator page: vanilla JS, no build step, served by the gateway (docs/ops.md).
// Every second it reads GET /v1/ops (the gateway's summary of the cluster's own Prometheus
// exporters) with the browser session of an admin or reader API key, and draws the numbers
// and a short history. Numbers here are measurements, shown as they come.
"use strict";

const $ = (id) => document.getElementById(id);
const O = { csrf: null, history: [], failed: 0 };
const HISTORY = 300; // samples kept for the chart (5 min at one a second)

function show(v, digits = 1) {
  if (v === null || v === undefined) return "—";
  if (typeof v === "number") return Number.isInteger(v) ? String(v) : v.toFixed(digits);
  return String(v);
}

function say(text, bad = false) {
  $("message").textContent = text;
  $("message").className = `message${bad ? " error" : ""}`;
}

function cells(tr, values) {
  for (const [cls, v, digits] of values) {
    const td = document.createElement("td");
    td.className = cls;
    td.textContent = show(v, digits);
    tr.append(td);
  }
}

function drawShards(id, rows, extra) {
  const body = $(id);
  body.replaceChildren(...rows.map((r) => {
    const tr = document.createElement("tr");
    tr.dataset.shard = r.shard;
    const engine = "engine_p50_ms" in r
      ? [["ep50", r.engine_p50_ms, 3], ["ep99", r.engine_p99_ms, 3]] : [];
    cells(tr, [["shard", r.shard], [r.up ? "up ok" : "up down", r.up ? "up" : "down"],
      ["p50", r.p50_ms, 3], ["p99", r.p99_ms, 3], ...engine, ["cps", r.commands_per_s, 1],
      ...extra(r), ["epoch", r.epoch], ["failovers", r.failovers]]);
    return tr;
  }));
}

function drawTotals(t, shards, accounts) {
  // the worst p99 of any latency shown (router ack of either tier, engine time)
  const worst = Math.max(...[...shards, ...accounts].map((s) =>
    Math.max(s.p99_ms ?? 0, s.engine_p99_ms ?? 0)), 0);
  const rows = [["commands/s", t.commands_per_s], ["trades/s", t.trades_per_s],
    ["bridge events/s", t.bridge_events_per_s], ["bridge lag (events)", t.bridge_lag],
    ["worst p99 (ms)", shards.length ? worst : null], ["failovers seen", t.failovers],
    ["engine shards", shards.length]];
  $("totals").replaceChildren(...rows.flatMap(([k, v]) => {
    const dt = document.createElement("dt"), dd = document.createElement("dd");
    dt.textContent = k;
    dd.textContent = show(v, k.includes("ms") ? 3 : 1);
    dd.dataset.name = k;
    return [dt, dd];
  }));
  O.history.push({ cps: t.commands_per_s ?? 0, p99: worst });
  if (O.history.length > HISTORY) O.history.shift();
}

// the chart is pixels: floats are fine here
function drawHistory() {
  const cv = $("history"), ctx = cv.getContext("2d");
  const w = cv.width = cv.clientWidth || 640, h = cv.height = cv.clientHeight || 200;
  ctx.clearRect(0, 0, w, h);
  cv.dataset.points = O.history.length;
  const series = [["cps", "#4c8dff"], ["p99", "#f0a030"]];
  ctx.font = "11px system-ui";
  series.forEach(([key, color], n) => {
    const top = Math.max(...O.history.map((p) => p[key]), 1e-9);
    ctx.strokeStyle = ctx.fillStyle = color;
    ctx.beginPath();
    O.history.forEach((p, i) => {
      const x = (i / Math.max(HISTORY - 1, 1)) * (w - 8) + 4, y = h - 14 - (p[key] / top) * (h - 30);
      if (i) ctx.lineTo(x, y); else ctx.moveTo(x, y);
    });
    ctx.stroke();
    ctx.fillText(`max ${show(top, key === "p99" ? 3 : 1)}`, 6 + n * 120, 12);
  });
}

function drawSources(sources) {
  $("sources").replaceChildren(...sources.map((s) => {
    const tr = document.createElement("tr");
    cells(tr, [["name", s.name], [s.ok ? "ok" : "bad", s.ok ? "read" : s.error]]);
    return tr;
  }));
}

async function session() {
  const resp = await fetch("/v1/session", { credentials: "same-origin" }).catch(() => null);
  if (resp && resp.ok) O.csrf = (await resp.json()).csrf;
}

async function poll() {
  let resp = null;
  try {
    resp = await fetch("/v1/ops", { credentials: "same-origin",
      headers: O.csrf ? { "X-SHARDEX-CSRF": O.csrf } : {} });
  } catch { /* the gateway away: said below */ }
  if (!resp) {
    $("conn").textContent = "no gateway"; $("conn").className = "conn down";
    return;
  }
  const got = await resp.json().catch(() => ({}));
  if (resp.status === 401 || resp.status === 403) {
    $("conn").textContent = "not allowed"; $("conn").className = "conn down";
    if (resp.status === 401) O.csrf = null;
    return say(`${got.name || resp.status}: log in on the trading page with an admin or reader `
      + "API key, then come back", true);
  }
  if (!resp.ok) return say(`${got.name || resp.status}: ${got.message || ""}`, true);
  $("conn").textContent = "live"; $("conn").className = "conn up";
  $("window").textContent = `over the last ${show(got.window_s)} s`;
  say(got.error || "");
  drawShards("engines", got.shards || [], (r) => [["backlog", r.backlog], ["lag", r.bridge_lag],
    ["resting", r.resting]]);
  drawShards("accounts", got.accounts || [], (r) => [["lag", r.bridge_lag],
    ["held", r.open_orders]]);
  drawTotals(got.totals || {}, got.shards || [], got.accounts || []);
  drawSources(got.sources || []);
  drawHistory();
}

async function loop() {
  if (!O.csrf) await session();
  await poll();
  setTimeout(loop, 1000);
}

loop();
