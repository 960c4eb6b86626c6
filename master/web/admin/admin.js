// The operator dashboard: a client of the admin API (docs/openapi/
// admin-api.json) and nothing else. The admin key is typed once, kept in
// this tab's sessionStorage and sent in the X-API-Key header, never in a
// URL. Every two seconds it reads /api/v1/load and /api/v1/rooms, derives
// messages per second from the rooms' counters, and draws the last minutes
// on <canvas> by hand. All text goes in with textContent.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const KEY = "chatserver.adminKey";
const POLL_MS = 2000;
const KEEP = 150; // samples: five minutes at one every two seconds

const D = {
  timer: null,
  rooms: new Map(), // name -> {row, cells, samples: [{t, msgs, rss}], rate}
  host: [], // [{t, rate, rss}]
};

// ---------------------------------------------------------------- API

class Unauthorized extends Error {}

async function api(method, path, body) {
  const key = sessionStorage.getItem(KEY);
  const headers = { "X-API-Key": key || "", accept: "application/json" };
  if (body !== undefined) headers["content-type"] = "application/json";
  const r = await fetch(path, { method, headers, body: body === undefined ? undefined : JSON.stringify(body), cache: "no-store" });
  const whom = r.headers.get("x-whom");
  if (whom) $("host").textContent = whom;
  let json = null;
  try {
    json = await r.json();
  } catch (_) {
    json = null;
  }
  if (r.status === 401) throw new Unauthorized("The admin key was refused.");
  if (!r.ok) throw new Error((json && json.message) || `${method} ${path}: ${r.status}`);
  return json ? json.data : null;
}

function say(text, bad) {
  const m = $("message");
  m.textContent = text;
  m.className = "message" + (bad ? " bad" : "");
}

// ---------------------------------------------------------------- login

async function login(ev) {
  ev.preventDefault();
  const key = $("key").value;
  if (!key) return;
  sessionStorage.setItem(KEY, key);
  $("key").value = "";
  await open();
}

async function open() {
  $("login-error").textContent = "";
  try {
    await api("GET", "/api/v1/load");
  } catch (e) {
    sessionStorage.removeItem(KEY);
    showLogin(e instanceof Unauthorized ? "Wrong admin key." : `The admin API did not answer: ${e.message}`);
    return;
  }
  $("login").hidden = true;
  $("dash").hidden = false;
  $("forget").hidden = false;
  poll();
}

function showLogin(why) {
  clearTimeout(D.timer);
  $("dash").hidden = true;
  $("forget").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = why || "";
  $("key").focus();
}

function forget() {
  sessionStorage.removeItem(KEY);
  D.rooms.clear();
  $("rooms").tBodies[0].replaceChildren();
  showLogin("");
}

// ---------------------------------------------------------------- polling

async function poll() {
  clearTimeout(D.timer);
  try {
    const [load, rooms] = await Promise.all([api("GET", "/api/v1/load"), api("GET", "/api/v1/rooms")]);
    showLoad(load);
    showRooms(rooms);
    $("status").textContent = `updated ${new Date().toLocaleTimeString()}`;
    $("status").className = "status";
  } catch (e) {
    if (e instanceof Unauthorized) {
      sessionStorage.removeItem(KEY);
      return showLogin("The admin key is no longer accepted.");
    }
    $("status").textContent = `cannot reach the admin API: ${e.message}`;
    $("status").className = "status bad";
  }
  D.timer = setTimeout(poll, POLL_MS);
}

function bytes(n) {
  if (!n) return "0 B";
  const u = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < u.length - 1) {
    n /= 1024;
    i++;
  }
  return `${n.toFixed(n < 10 && i > 0 ? 1 : 0)} ${u[i]}`;
}

function isoDuration(s) {
  // "PT1H2M3S" / "P3DT4H5M6S" -> "3 d 4 h" / "1 h 2 min"
  const m = /^P(?:(\d+)D)?(?:T(?:(\d+)H)?(?:(\d+)M)?(?:([\d.]+)S)?)?$/.exec(s || "");
  if (!m) return s || "–";
  const [d, h, min, sec] = m.slice(1).map((x) => Number(x || 0));
  if (d) return `${d} d ${h} h`;
  if (h) return `${h} h ${min} min`;
  if (min) return `${min} min`;
  return `${Math.round(sec)} s`;
}

function showLoad(l) {
  $("c-rooms").textContent = `${l.roomCount} / ${l.capacity}`;
  $("c-load").textContent = (l.loadAvg || []).map((x) => x.toFixed(2)).join(" ") + ` (${l.cpus} CPU)`;
  $("c-mem").textContent = `${l.percentage.toFixed(0)} % of ${bytes(l.totalMemory)}`;
  $("c-up").textContent = isoDuration(l.upTime);
  $("c-store").textContent = `${l.store}${l.storeReached ? "" : " (not reached)"}${l.pendingWrites ? `, ${l.pendingWrites} pending` : ""}`;
  $("c-version").textContent = l.version;
  const pill = $("drain-state");
  pill.textContent = l.acceptingConnections ? "accepting rooms" : "draining";
  pill.className = "pill" + (l.acceptingConnections ? "" : " draining");
  $("drain").disabled = !l.acceptingConnections;
  $("resume").disabled = l.acceptingConnections;
}

function showRooms(list) {
  const now = Date.now();
  const seen = new Set();
  let rate = 0;
  let rss = 0;
  for (const r of list) {
    seen.add(r.name);
    let entry = D.rooms.get(r.name);
    if (!entry) {
      entry = makeRow(r.name);
      D.rooms.set(r.name, entry);
    }
    const prev = entry.samples[entry.samples.length - 1];
    let perSec = 0;
    if (prev && now - prev.t < 1000) {
      // An extra poll right after an action: too short to measure a rate.
      perSec = prev.rate;
      prev.rss = r.rss_bytes;
    } else {
      if (prev && r.messages_in >= prev.msgs) perSec = ((r.messages_in - prev.msgs) * 1000) / (now - prev.t);
      entry.samples.push({ t: now, msgs: r.messages_in, rate: perSec, rss: r.rss_bytes });
      if (entry.samples.length > KEEP) entry.samples.shift();
    }
    rate += perSec;
    rss += r.rss_bytes;
    fillRow(entry, r, perSec);
  }
  for (const [name, entry] of D.rooms) {
    if (!seen.has(name)) {
      entry.row.remove();
      D.rooms.delete(name);
    }
  }
  // Rows in name order.
  const body = $("rooms").tBodies[0];
  const names = [...D.rooms.keys()].sort();
  names.forEach((n, i) => {
    const row = D.rooms.get(n).row;
    if (body.children[i] !== row) body.insertBefore(row, body.children[i] || null);
  });
  $("no-rooms").hidden = D.rooms.size > 0;
  const last = D.host[D.host.length - 1];
  if (last && now - last.t < 1000) last.rss = rss;
  else D.host.push({ t: now, rate, rss });
  if (D.host.length > KEEP) D.host.shift();
  $("rate-now").textContent = `(now ${rate.toFixed(1)})`;
  $("mem-now").textContent = `(now ${bytes(rss)})`;
  chart($("chart-rate"), D.host.map((s) => s.rate), "#2563eb", (v) => v.toFixed(1));
  chart($("chart-mem"), D.host.map((s) => s.rss), "#7c3aed", bytes);
}

function makeRow(name) {
  const row = el("tr");
  row.dataset.room = name;
  const cells = {};
  for (const k of ["name", "status", "port", "members", "connections", "rate", "rss", "restarts"]) {
    cells[k] = el(k === "name" ? "th" : "td", ["port", "members", "connections", "rate", "rss", "restarts"].includes(k) ? "num" : "");
    if (k === "name") cells[k].scope = "row";
    row.append(cells[k]);
  }
  const sparkline = (what) => {
    const td = el("td");
    const c = el("canvas");
    c.width = 120;
    c.height = 28;
    c.setAttribute("role", "img");
    c.setAttribute("aria-label", `${what} of ${name}, last 5 minutes`);
    td.append(c);
    row.append(td);
    return c;
  };
  const spark = sparkline("messages per second");
  const memSpark = sparkline("memory");
  const actions = el("td");
  const box = el("div", "actions");
  const form = el("form");
  const input = el("input");
  input.placeholder = "notice to this room";
  input.setAttribute("aria-label", `Notice to ${name}`);
  input.required = true;
  const send = el("button", "small", "Broadcast");
  send.type = "submit";
  form.append(input, send);
  form.addEventListener("submit", async (ev) => {
    ev.preventDefault();
    await act(`Notice sent to ${name}.`, () => api("POST", `/api/v1/rooms/${encodeURIComponent(name)}/broadcast`, { text: input.value }));
    input.value = "";
  });
  const restart = confirmButton("Restart", `Restart ${name}`, () =>
    act(`Restarting ${name}.`, () => api("POST", `/api/v1/rooms/${encodeURIComponent(name)}/restart`)),
  );
  const shut = confirmButton("Shut down", `Shut down ${name}`, () =>
    act(`Shutting down ${name}.`, () => api("DELETE", `/api/v1/room/${encodeURIComponent(name)}/shutdown`)),
  );
  shut.classList.add("danger");
  box.append(form, restart, shut);
  actions.append(box);
  row.append(actions);
  return { row, cells, spark, memSpark, samples: [] };
}

// A button that asks for a second press within five seconds.
function confirmButton(label, aria, action) {
  const b = el("button", "small", label);
  b.type = "button";
  b.setAttribute("aria-label", aria);
  let armed = null;
  b.addEventListener("click", () => {
    if (!armed) {
      b.textContent = `Confirm ${label.toLowerCase()}`;
      b.classList.add("armed");
      armed = setTimeout(() => {
        armed = null;
        b.textContent = label;
        b.classList.remove("armed");
      }, 5000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    b.textContent = label;
    b.classList.remove("armed");
    action();
  });
  return b;
}

async function act(done, call) {
  try {
    await call();
    say(done);
  } catch (e) {
    if (e instanceof Unauthorized) return showLogin("The admin key is no longer accepted.");
    say(e.message, true);
  }
  poll();
}

function fillRow(entry, r, perSec) {
  const c = entry.cells;
  c.name.textContent = r.name;
  c.status.textContent = r.status + (r.error ? `: ${r.error}` : "");
  c.status.className = `status-${r.status}`;
  c.port.textContent = String(r.port);
  c.members.textContent = String(r.members);
  c.connections.textContent = String(r.connections);
  c.rate.textContent = perSec.toFixed(1);
  c.rss.textContent = bytes(r.rss_bytes);
  c.restarts.textContent = String(r.restarts);
  chart(entry.spark, entry.samples.map((s) => s.rate), "#2563eb");
  chart(entry.memSpark, entry.samples.map((s) => s.rss), "#7c3aed");
}

// ---------------------------------------------------------------- charts

// A line chart of `values` (oldest first), scaled to its maximum, drawn
// at the device's pixel ratio; with `label`, the maximum is written.
function chart(canvas, values, color, label) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width;
  const h = canvas.clientHeight || canvas.height;
  if (canvas.width !== Math.round(w * ratio)) canvas.width = Math.round(w * ratio);
  if (canvas.height !== Math.round(h * ratio)) canvas.height = Math.round(h * ratio);
  const g = canvas.getContext("2d");
  g.setTransform(ratio, 0, 0, ratio, 0, 0);
  g.clearRect(0, 0, w, h);
  const max = Math.max(1e-9, ...values);
  const pad = label ? 14 : 2;
  g.strokeStyle = "#e5e7eb";
  g.lineWidth = 1;
  g.beginPath();
  g.moveTo(0, h - 1.5);
  g.lineTo(w, h - 1.5);
  g.stroke();
  if (values.length > 1) {
    const step = w / (KEEP - 1);
    const x0 = w - step * (values.length - 1);
    const y = (v) => h - 2 - (v / max) * (h - pad - 2);
    g.beginPath();
    values.forEach((v, i) => (i ? g.lineTo(x0 + i * step, y(v)) : g.moveTo(x0, y(v))));
    g.strokeStyle = color;
    g.lineWidth = 1.5;
    g.stroke();
    g.lineTo(w, h - 2);
    g.lineTo(x0, h - 2);
    g.closePath();
    g.globalAlpha = 0.12;
    g.fillStyle = color;
    g.fill();
    g.globalAlpha = 1;
  }
  if (label) {
    g.fillStyle = "#5b6470";
    g.font = "11px system-ui, sans-serif";
    g.fillText(`max ${label(values.length ? max : 0)}`, 4, 11);
  }
}

// ---------------------------------------------------------------- wiring

function init() {
  $("login").addEventListener("submit", login);
  $("forget").addEventListener("click", forget);
  $("broadcast").addEventListener("submit", async (ev) => {
    ev.preventDefault();
    const text = $("broadcast-text").value;
    await act("Notice sent to every room.", () => api("POST", "/api/v1/broadcast", { text }));
    $("broadcast-text").value = "";
  });
  $("drain").addEventListener("click", () =>
    act("Draining: no new rooms.", () => api("POST", "/api/v1/drain", { connections: $("drain-joins").checked })),
  );
  $("resume").addEventListener("click", () => act("Accepting rooms again.", () => api("POST", "/api/v1/resume")));
  if (sessionStorage.getItem(KEY)) open();
  else showLogin("");
}

init();
