// geonode status page: everything it shows comes over WAMP from the node's own meta API
// (wamp.session.*, wamp.subscription.*, wamp.registration.*) and geonode.status.get
// (message counters, WSGI pools), through this status path's read-only endpoint (./ws).
"use strict";

const HISTORY = 60;                 // points per chart (one a second)
const sessions = new Map();         // session id -> details
const rates = {in: [], out: [], wsgi: []};
let last = null;                    // the previous geonode.status.get answer
let realmName = null;

function el(id) { return document.getElementById(id); }

function cell(row, text, cls) {
  const td = row.insertCell();
  td.textContent = text === undefined || text === null ? "" : String(text);
  if (cls) td.className = cls;
  return td;
}

function uptime(s) {
  s = Math.floor(s);
  const d = Math.floor(s / 86400), h = Math.floor(s % 86400 / 3600),
        m = Math.floor(s % 3600 / 60), sec = s % 60;
  const p = (n) => String(n).padStart(2, "0");
  return (d ? d + "d " : "") + p(h) + ":" + p(m) + ":" + p(sec);
}

function renderSessions() {
  const body = el("sessions").tBodies[0];
  body.replaceChildren();
  const ids = [...sessions.keys()].sort((a, b) => a - b);
  for (const id of ids) {
    const d = sessions.get(id);
    const row = body.insertRow();
    row.dataset.sessionId = String(id);
    const t = d.transport || {};
    cell(row, id); cell(row, d.authid); cell(row, d.authrole);
    cell(row, t.type + (d.serializer ? "/" + d.serializer : "")); cell(row, t.peer);
  }
  if (!ids.length) {
    const row = body.insertRow();
    const td = cell(row, "no client sessions", "empty"); td.colSpan = 5;
  }
  el("sessions-count").textContent = "(" + ids.length + ")";
  el("nsessions").textContent = String(ids.length);
}

function sessionJoined(details) {
  sessions.set(details.session, details);
  renderSessions();
}

function sessionLeft(id) {
  sessions.delete(id);
  renderSessions();
}

async function loadSessions(session) {
  const ids = await session.call("wamp.session.list");
  const fresh = new Map();
  for (const id of ids) {
    try { fresh.set(id, sessions.get(id) || await session.call("wamp.session.get", [id])); }
    catch (e) { /* left meanwhile */ }
  }
  sessions.clear();
  for (const [id, d] of fresh) sessions.set(id, d);
  renderSessions();
}

async function loadTable(session, kind, tableId, countId, columns) {
  const lists = await session.call("wamp." + kind + ".list");
  const rows = [];
  for (const match of ["exact", "prefix", "wildcard"]) {
    for (const id of (lists[match] || [])) {
      try {
        const info = await session.call("wamp." + kind + ".get", [id]);
        if (String(info.uri).startsWith("wamp.")) continue;   // the router's own (this page's)
        const n = await session.call(kind === "subscription" ? "wamp.subscription.count_subscribers"
                                                             : "wamp.registration.count_callees", [id]);
        rows.push(columns(info, n));
      } catch (e) { /* gone meanwhile */ }
    }
  }
  rows.sort((a, b) => String(a[0]).localeCompare(String(b[0])));
  const body = el(tableId).tBodies[0];
  body.replaceChildren();
  for (const r of rows) {
    const row = body.insertRow();
    r.forEach((v, i) => cell(row, v, i === r.length - 1 ? "num" : ""));
  }
  if (!rows.length) {
    const row = body.insertRow();
    const td = cell(row, "none", "empty"); td.colSpan = 4;
  }
  el(countId).textContent = "(" + rows.length + ")";
}

function sum(obj) { return Object.values(obj || {}).reduce((a, b) => a + b, 0); }

function push(series, value) {
  series.push(value);
  if (series.length > HISTORY) series.shift();
}

function chart(canvas, lines) {
  const ctx = canvas.getContext("2d");
  const w = canvas.width, h = canvas.height;
  ctx.clearRect(0, 0, w, h);
  let max = 1;
  for (const l of lines) for (const v of l.data) max = Math.max(max, v);
  ctx.fillStyle = "#999"; ctx.font = "11px sans-serif";
  ctx.fillText(String(Math.round(max)), 4, 11);
  for (const l of lines) {
    ctx.strokeStyle = l.color; ctx.lineWidth = 2; ctx.beginPath();
    l.data.forEach((v, i) => {
      const x = w - (l.data.length - 1 - i) * (w / (HISTORY - 1));
      const y = h - 2 - (v / max) * (h - 16);
      if (i === 0) ctx.moveTo(x, y); else ctx.lineTo(x, y);
    });
    ctx.stroke();
  }
}

async function poll(session) {
  const s = await session.call("geonode.status.get");
  el("title").textContent = (s.title || "geonode") + " " + s.version;
  el("uptime").textContent = uptime(s.uptime);
  const r = s.realms[realmName] || {received: {}, sent: {}, calls: 0};
  if (last) {
    const dt = Math.max(0.001, s.time - last.time);
    const lr = last.realms[realmName] || {received: {}, sent: {}, calls: 0};
    const rin = (sum(r.received) - sum(lr.received)) / dt;
    const rout = (sum(r.sent) - sum(lr.sent)) / dt;
    push(rates.in, rin); push(rates.out, rout);
    el("rate-in").textContent = rin.toFixed(0);
    el("rate-out").textContent = rout.toFixed(0);
    el("rate-calls").textContent = ((r.calls - lr.calls) / dt).toFixed(0);
    chart(el("ratechart"), [{data: rates.in, color: "#2b6cb0"}, {data: rates.out, color: "#c05621"}]);
  }
  const busy = s.wsgi.reduce((a, p) => a + p.busy, 0);
  push(rates.wsgi, busy);
  chart(el("wsgichart"), [{data: rates.wsgi, color: "#2f855a"}]);
  const body = el("wsgi-rows");
  body.replaceChildren();
  for (const p of s.wsgi) {
    const row = body.insertRow();
    cell(row, p.path); cell(row, p.busy, "num"); cell(row, p.waiting, "num");
    cell(row, p.maxthreads, "num");
  }
  if (!s.wsgi.length) {
    const row = body.insertRow();
    const td = cell(row, "no WSGI paths", "empty"); td.colSpan = 4;
  }
  last = s;
}

function start() {
  const params = new URLSearchParams(location.search);
  const url = new URL("ws", location.href);
  url.protocol = location.protocol === "https:" ? "wss:" : "ws:";
  const config = window.GEONODE_STATUS || {};
  realmName = params.get("realm") || config.realm || "realm1";
  el("realm").textContent = realmName;
  const opts = {url: url.href, realm: realmName, max_retries: -1, max_retry_delay: 5};
  if (params.get("authid")) {   // ?authid=...: ticket auth, the page asks for the secret
    opts.authmethods = ["ticket"];
    opts.authid = params.get("authid");
    opts.onchallenge = () => window.prompt("ticket for " + params.get("authid"));
  }
  const conn = new autobahn.Connection(opts);
  let timers = [];
  conn.onopen = async (session) => {
    el("conn").textContent = "live"; el("conn").className = "up";
    await session.subscribe("wamp.session.on_join", (args) => sessionJoined(args[0]));
    await session.subscribe("wamp.session.on_leave", (args) => sessionLeft(args[0]));
    const subs = () => loadTable(session, "subscription", "subscriptions", "subs-count",
                                 (i, n) => [i.uri, i.match, n]);
    const regs = () => loadTable(session, "registration", "registrations", "regs-count",
                                 (i, n) => [i.uri, i.match, i.invoke, n]);
    for (const t of ["on_create", "on_delete", "on_subscribe", "on_unsubscribe"]) {
      await session.subscribe("wamp.subscription." + t, () => subs());
    }
    for (const t of ["on_create", "on_delete", "on_register", "on_unregister"]) {
      await session.subscribe("wamp.registration." + t, () => regs());
    }
    await loadSessions(session);
    await Promise.all([subs(), regs(), poll(session)]);
    timers = [setInterval(() => poll(session).catch(console.warn), 1000),
              // a safety net: events lost while reconnecting are caught up within 10 s
              setInterval(() => { loadSessions(session); subs(); regs(); }, 10000)];
  };
  conn.onclose = (reason) => {
    timers.forEach(clearInterval); timers = [];
    el("conn").textContent = "disconnected (" + reason + "), retrying"; el("conn").className = "";
    return false;
  };
  conn.open();
}

start();
