// The shardex trading page: vanilla JS, no build step, served by the gateway (docs/web.md).
// Market data from the public WebSocket (/v1/ws: book with seq/prev_seq and CRC32, trades
// resumed by seq, ticker); private panels from the REST routes with the session cookie and
// its CSRF token. The API secret is used here only, to sign the login with WebCrypto: it
// never leaves the page, and it is not kept after the login.
"use strict";

const $ = (id) => document.getElementById(id);
const enc = new TextEncoder();
const S = {
  markets: [], perp: {}, symbol: null, csrf: null, who: null, ws: null, backoff: 500, lastMsg: 0,
  clockSkew: 0, wsSession: null, book: null, tradeSeq: {}, timers: {},
};
const TAPE_ROWS = 60;
const LADDER_ROWS = 15;

// ---- decimals as strings: compared and shown, never turned into money floats -------------

function cmpDec(a, b) {
  const [aw, af = ""] = a.split(".");
  const [bw, bf = ""] = b.split(".");
  const wa = aw.replace(/^0+/, ""), wb = bw.replace(/^0+/, "");
  if (wa.length !== wb.length) return wa.length - wb.length;
  if (wa !== wb) return wa < wb ? -1 : 1;
  const n = Math.max(af.length, bf.length);
  const fa = af.padEnd(n, "0"), fb = bf.padEnd(n, "0");
  return fa === fb ? 0 : (fa < fb ? -1 : 1);
}
const isZero = (s) => !/[1-9]/.test(s);
const digits = (s) => s.replace(".", "").replace(/^0+/, "");

// ---- CRC32 (zlib's), for the book checksum ---------------------------------------------

const CRC_TABLE = (() => {
  const t = new Uint32Array(256);
  for (let n = 0; n < 256; n++) {
    let c = n;
    for (let k = 0; k < 8; k++) c = c & 1 ? 0xedb88320 ^ (c >>> 1) : c >>> 1;
    t[n] = c >>> 0;
  }
  return t;
})();

function crc32(text) {
  let c = 0xffffffff;
  for (let i = 0; i < text.length; i++) c = CRC_TABLE[(c ^ text.charCodeAt(i)) & 0xff] ^ (c >>> 8);
  return (c ^ 0xffffffff) >>> 0;
}

// ---- the book: snapshot, deltas in prev_seq order, checksum after each -------------------

function newBook(symbol) {
  return { symbol, bids: new Map(), asks: new Map(), seq: null, synced: false };
}

function sides(book) {
  const bids = [...book.bids].sort((x, y) => cmpDec(y[0], x[0]));
  const asks = [...book.asks].sort((x, y) => cmpDec(x[0], y[0]));
  return { bids, asks };
}

function checksumOf(bids, asks) {
  const part = (lv) => lv.slice(0, 10).map(([p, q]) => digits(p) + digits(q)).join("");
  return crc32(part(asks) + part(bids));
}

function onBook(msg) {
  const b = S.book;
  if (!b || msg.symbol !== b.symbol) return;
  if (msg.type === "snapshot") {
    b.bids = new Map(msg.bids);
    b.asks = new Map(msg.asks);
  } else {
    if (!b.synced) return; // deltas after a gap, before the snapshot asked for
    if (msg.prev_seq !== b.seq) return resyncBook("gap");
    for (const side of ["bids", "asks"]) {
      for (const [p, q] of msg[side]) {
        if (isZero(q)) b[side].delete(p); else b[side].set(p, q);
      }
    }
  }
  b.seq = msg.seq;
  const { bids, asks } = sides(b);
  if (checksumOf(bids, asks) !== msg.checksum) return resyncBook("checksum");
  b.synced = true;
  $("book-state").textContent = `seq ${b.seq} ✓`;
  $("book-state").className = "state";
  drawLadder(bids, asks);
}

function resyncBook(why) {
  S.book.synced = false;
  $("book-state").textContent = `resync (${why})`;
  $("book-state").className = "state bad";
  send({ op: "resync", channel: "book", symbol: S.book.symbol });
}

function ladderRow(p, q, cls) {
  const tr = document.createElement("tr");
  tr.dataset.price = p;
  tr.className = cls;
  tr.innerHTML = '<td class="price"></td><td class="qty"></td>';
  tr.cells[0].textContent = p;
  tr.cells[1].textContent = q;
  tr.addEventListener("click", () => { $("price").value = p; });
  return tr;
}

function drawLadder(bids, asks) {
  const a = asks.slice(0, LADDER_ROWS).reverse().map(([p, q]) => ladderRow(p, q, "ask"));
  $("asks").replaceChildren(...a);
  $("bids").replaceChildren(...bids.slice(0, LADDER_ROWS).map(([p, q]) => ladderRow(p, q, "bid")));
  $("spread").textContent = bids.length && asks.length ? `${bids[0][0]} / ${asks[0][0]}` : "—";
}

// ---- trades and ticker -------------------------------------------------------------------

function onTrade(msg) {
  if (msg.symbol !== S.symbol) return;
  S.tradeSeq[msg.symbol] = msg.seq;
  const tr = document.createElement("tr");
  tr.className = `trade ${msg.side || ""}`;
  tr.dataset.tradeId = msg.trade_id;
  tr.innerHTML = "<td></td><td></td><td></td>";
  tr.cells[0].textContent = msg.ts ? new Date(msg.ts).toLocaleTimeString() : "";
  tr.cells[1].textContent = msg.price;
  tr.cells[2].textContent = msg.qty;
  $("tape").prepend(tr);
  while ($("tape").rows.length > TAPE_ROWS) $("tape").deleteRow(-1);
  later("chart", 1000, loadCandles);
  if (S.who) later("private", 300, refreshPrivate);
}

// a perp pair's mark and index (the "mark" channel) and its last funding payment ("funding")
function onPerp(msg) {
  if (msg.symbol !== S.symbol) return;
  if (msg.channel === "mark") S.perp.mark = `mark ${msg.mark}  index ${msg.index}`;
  else S.perp.funding = `funding ${msg.per_lot} per lot (cumulative ${msg.cumulative})`;
  $("perp").textContent = [S.perp.mark, S.perp.funding].filter(Boolean).join("  ");
}

function isPerp(symbol) {
  return S.markets.some((m) => m.symbol === symbol && m.kind === "perp");
}

function onTicker(msg) {
  if (msg.symbol !== S.symbol) return;
  const pct = msg.change_percent == null ? "" : ` (${msg.change_percent}%)`;
  $("ticker").textContent = `last ${msg.last ?? "—"}${pct}  bid ${msg.bid ?? "—"}  ` +
    `ask ${msg.ask ?? "—"}  24h vol ${msg.volume}`;
}

// ---- the WebSocket: reconnect with backoff, resubscribe and resync -----------------------

function send(obj) {
  if (S.ws && S.ws.readyState === WebSocket.OPEN) S.ws.send(JSON.stringify(obj));
}

function connect() {
  const ws = new WebSocket(`${location.protocol === "https:" ? "wss" : "ws"}://${location.host}/v1/ws`);
  S.ws = ws;
  ws.onopen = () => {
    S.backoff = 500;
    S.lastMsg = Date.now();
    setConn(true);
    S.wsSession = S.csrf; // (the cookie, if any, went with this upgrade)
    subscribeMarket();
    if (S.who) { send({ op: "subscribe", channel: "user" }); refreshPrivate(); }
  };
  ws.onmessage = (ev) => {
    S.lastMsg = Date.now();
    let msg;
    try { msg = JSON.parse(ev.data); } catch { return; }
    // data messages: a book's snapshot/update, a trade or a ticker (which carry no type);
    // acks and "subscribed" name a channel too, and are not data
    if (msg.channel === "book" && (msg.type === "snapshot" || msg.type === "update")) onBook(msg);
    else if (msg.channel === "trades" && msg.type === undefined) onTrade(msg);
    else if (msg.channel === "ticker" && msg.type === undefined) onTicker(msg);
    else if (["mark", "funding"].includes(msg.channel) && msg.type === undefined) onPerp(msg);
    else if (["mark", "funding"].includes(msg.channel) && msg.type === "subscribed" && msg.last) {
      onPerp(msg.last);
    }
    else if (msg.type === "heartbeat") S.clockSkew = msg.ts - Date.now();
    else if (msg.type === "resync_required") onResyncRequired(msg);
    else if (msg.type === "subscribed" && msg.channel === "user") $("who").dataset.user = "live";
    else if (["order", "fill", "balance"].includes(msg.type)) later("private", 100, refreshPrivate);
    else if (msg.type === "error" && msg.name === "session_ended" && S.who) {
      loggedOut("the session ended (logged out elsewhere, or expired): log in again");
    }
  };
  ws.onclose = () => {
    if (S.ws !== ws) return;
    setConn(false);
    delete $("who").dataset.user;
    if (S.book) S.book.synced = false;
    const wait = S.backoff * (0.75 + Math.random() / 2);
    S.backoff = Math.min(S.backoff * 2, 10000);
    setTimeout(connect, wait);
  };
}

function onResyncRequired(msg) {
  if (msg.channel === "book" && S.book && msg.symbol === S.book.symbol) resyncBook("slow");
  if (msg.channel === "trades" && msg.symbol === S.symbol) {
    const since = S.tradeSeq[msg.symbol];
    send({ op: "subscribe", channel: "trades", symbol: msg.symbol,
           ...(since != null ? { from_seq: since } : {}) });
  }
}

function subscribeMarket() {
  if (!S.symbol) return;
  S.book = newBook(S.symbol);
  send({ op: "subscribe", channel: "book", symbol: S.symbol });
  const since = S.tradeSeq[S.symbol];
  send({ op: "subscribe", channel: "trades", symbol: S.symbol,
         ...(since != null ? { from_seq: since } : {}) });
  send({ op: "subscribe", channel: "ticker", symbol: S.symbol });
  if (isPerp(S.symbol)) {
    for (const channel of ["mark", "funding"]) send({ op: "subscribe", channel, symbol: S.symbol });
  }
}

function setConn(up) {
  $("conn").textContent = up ? "live" : "reconnecting";
  $("conn").className = `conn ${up ? "up" : "down"}`;
}

// a connection silent for 5 s (no heartbeat) is dead even if the socket has not noticed
setInterval(() => {
  if (S.ws && S.ws.readyState === WebSocket.OPEN && Date.now() - S.lastMsg > 5000) S.ws.close();
}, 1000);

function later(name, ms, fn) {
  if (S.timers[name]) return;
  S.timers[name] = setTimeout(() => { S.timers[name] = null; fn(); }, ms);
}

// ---- markets and the chart ----------------------------------------------------------------

async function loadMarkets() {
  const resp = await fetch("/v1/markets");
  S.markets = (await resp.json()).markets;
  $("market").replaceChildren(...S.markets.map((m) => new Option(m.symbol, m.symbol)));
  const want = new URLSearchParams(location.search).get("symbol");
  selectMarket(S.markets.some((m) => m.symbol === want) ? want : S.markets[0]?.symbol);
}

function selectMarket(symbol) {
  if (!symbol) return;
  if (S.symbol && S.symbol !== symbol) {
    const perp = isPerp(S.symbol) ? ["mark", "funding"] : [];
    for (const channel of ["book", "trades", "ticker", ...perp]) {
      send({ op: "unsubscribe", channel, symbol: S.symbol });
    }
  }
  S.symbol = symbol;
  $("market").value = symbol;
  $("tape").replaceChildren();
  $("ticker").textContent = "";
  S.perp = {};
  $("perp").textContent = "";
  $("perp").hidden = !isPerp(symbol);
  subscribeMarket();
  loadCandles();
  if (S.who) refreshPrivate();
}

async function loadCandles() {
  const symbol = S.symbol, interval = $("interval").value;
  try {
    const resp = await fetch(`/v1/candles?symbol=${encodeURIComponent(symbol)}&interval=${interval}&limit=120`);
    const body = await resp.json();
    if (resp.ok && symbol === S.symbol) drawChart(body.candles);
  } catch { /* the next trade or market change tries again */ }
}

// Candles are drawn with floats: pixel positions only, never a number shown or sent.
function drawChart(candles) {
  const cv = $("chart"), ctx = cv.getContext("2d");
  const w = cv.width = cv.clientWidth || 640, h = cv.height = cv.clientHeight || 300;
  ctx.clearRect(0, 0, w, h);
  cv.dataset.candles = candles.length; // (what is drawn, for a test to read)
  ctx.fillStyle = "#8a939e";
  ctx.font = "12px system-ui";
  if (!candles.length) { ctx.fillText("no trades yet", 10, 20); return; }
  let lo = Math.min(...candles.map((c) => +c.low)), hi = Math.max(...candles.map((c) => +c.high));
  if (hi === lo) { const d = Math.abs(hi) / 1000 || 1; lo -= d; hi += d; } // flat: centred
  const pad = 24, span = hi - lo, step = (w - 60) / Math.max(candles.length, 30);
  const y = (v) => pad + (h - 2 * pad) * (1 - (v - lo) / span);
  candles.forEach((c, i) => {
    const x = 4 + i * step + step / 2, up = cmpDec(c.close, c.open) >= 0;
    ctx.strokeStyle = ctx.fillStyle = up ? "#2ebd85" : "#f6465d";
    ctx.beginPath(); ctx.moveTo(x, y(+c.high)); ctx.lineTo(x, y(+c.low)); ctx.stroke();
    const top = y(Math.max(+c.open, +c.close)), bot = y(Math.min(+c.open, +c.close));
    ctx.fillRect(x - step * 0.35, top, step * 0.7, Math.max(1, bot - top));
  });
  ctx.fillStyle = "#8a939e";
  const last = candles[candles.length - 1];
  ctx.fillText(candles.reduce((m, c) => (cmpDec(c.high, m) > 0 ? c.high : m), last.high), w - 56, pad);
  ctx.fillText(candles.reduce((m, c) => (cmpDec(c.low, m) < 0 ? c.low : m), last.low), w - 56, h - pad + 12);
}

// ---- login: the page signs, the gateway sets an HttpOnly cookie --------------------------

async function hmacHex(secret, text) {
  const key = await crypto.subtle.importKey("raw", enc.encode(secret),
    { name: "HMAC", hash: "SHA-256" }, false, ["sign"]);
  const sig = new Uint8Array(await crypto.subtle.sign("HMAC", key, enc.encode(text)));
  return [...sig].map((b) => b.toString(16).padStart(2, "0")).join("");
}

async function login(ev) {
  ev.preventDefault();
  const keyId = $("key-id").value.trim(), secret = $("secret").value.trim();
  $("secret").value = "";
  if (!crypto.subtle) return say("login needs https (or localhost): WebCrypto is off here", true);
  const ts = String(Date.now() + S.clockSkew), body = "{}";
  const sig = await hmacHex(secret, `${ts}POST/v1/session${body}`);
  const resp = await fetch("/v1/session", { method: "POST", body, credentials: "same-origin",
    headers: { "Content-Type": "application/json", "X-SHARDEX-KEY": keyId,
               "X-SHARDEX-TIMESTAMP": ts, "X-SHARDEX-SIGNATURE": sig } });
  const got = await resp.json();
  if (!resp.ok) return say(`login refused: ${got.name} (${got.message})`, true);
  loggedIn(got);
  say(`logged in as ${got.key_id}`);
}

function loggedIn(info) {
  S.who = info;
  S.csrf = info.csrf;
  $("login-form").hidden = true;
  $("who").hidden = $("logout").hidden = false;
  $("who").textContent = `${info.key_id} · ${info.accounts.join(", ") || info.role}`;
  // the WebSocket opened before this session carries no cookie: open it again with it
  if (S.ws && S.wsSession !== S.csrf) { S.backoff = 100; S.ws.close(); }
  refreshPrivate();
}

function loggedOut(why) {
  S.who = S.csrf = null;
  $("login-form").hidden = false;
  $("who").hidden = $("logout").hidden = true;
  for (const id of ["orders", "fills", "balances"]) $(id).replaceChildren();
  if (why) say(why, true);
  // a WebSocket opened with the session stays logged in to the user channel: open a new one
  if (S.ws && S.wsSession) { S.backoff = 100; S.ws.close(); }
}

async function logout() {
  await api("DELETE", "/v1/session").catch(() => null);
  loggedOut();
  say("logged out");
}

async function resume() {
  const resp = await fetch("/v1/session", { credentials: "same-origin" });
  if (resp.ok) loggedIn(await resp.json());
}

// ---- private REST calls with the session ---------------------------------------------------

async function api(method, path, body) {
  const headers = { "X-SHARDEX-CSRF": S.csrf || "" };
  if (body !== undefined) headers["Content-Type"] = "application/json";
  const resp = await fetch(path, { method, headers, credentials: "same-origin",
    body: body === undefined ? undefined : JSON.stringify(body) });
  let got = {};
  try { got = await resp.json(); } catch { /* an empty answer */ }
  if (resp.status === 401 && S.who) {
    loggedOut("the session ended (expired, or the gateway restarted): log in again");
  }
  return { status: resp.status, ok: resp.ok, body: got };
}

async function refreshPrivate() {
  if (!S.who) return;
  const q = `symbol=${encodeURIComponent(S.symbol)}`;
  const [orders, fills, balances] = await Promise.all([
    api("GET", `/v1/openOrders?${q}`), api("GET", `/v1/fills?${q}&limit=50`),
    api("GET", "/v1/balances")]);
  if (!S.who) return;
  if (orders.ok) drawOrders(orders.body.orders || []); else unavailable("orders", orders, 6);
  if (fills.ok) drawFills(fills.body.fills || []); else unavailable("fills", fills, 6);
  if (balances.ok) drawBalances(balances.body.balances || {}); else unavailable("balances", balances, 3);
}

function unavailable(id, got, cols) {
  const tr = document.createElement("tr");
  tr.innerHTML = `<td colspan="${cols}"></td>`;
  tr.cells[0].textContent = `not available: ${got.body.name || got.status}`;
  $(id).replaceChildren(tr);
}

function row(cells, cls) {
  const tr = document.createElement("tr");
  if (cls) tr.className = cls;
  for (const c of cells) {
    const td = document.createElement("td");
    td.textContent = c ?? "";
    tr.append(td);
  }
  return tr;
}

function drawOrders(orders) {
  $("orders").replaceChildren(...orders.map((o) => {
    const tr = row([o.id, o.side, o.price ?? "market", o.qty, o.filled], o.side);
    tr.dataset.id = o.id;
    const btn = document.createElement("button");
    btn.className = "cancel";
    btn.textContent = "Cancel";
    btn.addEventListener("click", () => cancel(o.symbol || S.symbol, o.id));
    const td = document.createElement("td");
    td.append(btn);
    tr.append(td);
    return tr;
  }));
}

function drawFills(fills) {
  $("fills").replaceChildren(...fills.map((f) => {
    const tr = row([f.ts ? new Date(f.ts).toLocaleTimeString() : "", f.side, f.price, f.qty,
      `${f.fee} ${f.fee_asset || ""}`, f.role], `fill ${f.side}`);
    tr.dataset.tradeId = f.trade_id;
    return tr;
  }));
}

function drawBalances(balances) {
  $("balances").replaceChildren(...Object.keys(balances).sort().map((asset) => {
    const tr = row([asset, balances[asset].free, balances[asset].held]);
    tr.dataset.asset = asset;
    return tr;
  }));
}

async function place(ev) {
  ev.preventDefault();
  if (!S.who) return say("log in to trade", true);
  const type = $("type").value, side = document.querySelector("input[name=side]:checked").value;
  const order = { symbol: S.symbol, side, qty: $("qty").value.trim(), type,
                  id: `web-${Date.now().toString(36)}${Math.random().toString(36).slice(2, 6)}` };
  if (type === "limit") order.price = $("price").value.trim();
  const got = await api("POST", "/v1/order", order);
  const b = got.body; // (with an account tier an accepted order has no events yet: held, forwarded)
  if (got.ok) say(`${side} ${order.qty} @ ${order.price || "market"}: ${(b.events || []).map((e) => e.ev).join(", ") || "accepted"} (id ${b.id})`);
  else say(`order refused: ${b.error?.name || b.name || got.status} ${b.error?.message || b.message || ""}`, true);
  refreshPrivate();
}

async function cancel(symbol, id) {
  const got = await api("DELETE", `/v1/order?symbol=${encodeURIComponent(symbol)}&id=${encodeURIComponent(id)}`);
  say(got.ok ? `cancelled ${id}` : `cancel refused: ${got.body.error?.name || got.body.name || got.status}`, !got.ok);
  refreshPrivate();
}

async function cancelAll() {
  const got = await api("DELETE", `/v1/orders?symbol=${encodeURIComponent(S.symbol)}`);
  say(got.ok ? "cancelled all" : `cancel all refused: ${got.body.name || got.status}`, !got.ok);
  refreshPrivate();
}

function say(text, bad = false) {
  $("message").textContent = text;
  $("message").className = `message${bad ? " error" : ""}`;
}

// ---- start ----------------------------------------------------------------------------------

document.addEventListener("DOMContentLoaded", () => {
  $("login-form").addEventListener("submit", (ev) => login(ev).catch((e) => say(`login failed: ${e}`, true)));
  $("logout").addEventListener("click", logout);
  $("ticket").addEventListener("submit", (ev) => place(ev).catch((e) => say(`order failed: ${e}`, true)));
  $("cancel-all").addEventListener("click", cancelAll);
  $("market").addEventListener("change", () => selectMarket($("market").value));
  $("interval").addEventListener("change", loadCandles);
  $("type").addEventListener("change", () => { $("price").disabled = $("type").value === "market"; });
  connect();
  loadMarkets().catch((e) => say(`markets: ${e}`, true));
  resume().catch(() => null);
});
