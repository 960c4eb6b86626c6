// The chat page: joins a room over WebSocket (docs/PROTOCOL.md), shows its
// messages, members, typing, whispers, notices and errors, resumes after a
// dropped connection with since/epoch, and for token users keeps a panel of
// direct-message conversations. Every text from the server is put in the
// page with textContent: nothing from a message or a name is ever parsed as
// HTML.
"use strict";

const $ = (id) => document.getElementById(id);
const el = (tag, cls, text) => {
  const e = document.createElement(tag);
  if (cls) e.className = cls;
  if (text !== undefined) e.textContent = text;
  return e;
};

const RANK = { guest: 0, member: 1, moderator: 2, owner: 3 };
// Close codes after which retrying the same request cannot help.
const FATAL = new Set([4000, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 1011]);
const CLOSE_WORDS = {
  1001: "The room is closing.",
  1008: "The server closed the connection (too many messages or a slow connection).",
  1011: "The room failed and was given up. Ask for it to be created again.",
  1012: "The room is restarting.",
  1013: "The server is not taking new connections right now.",
  4000: "The server refused the request",
  4001: "The sign-in was refused",
  4002: "Your token has expired: get a new one.",
  4003: "This token is for another room.",
  4004: "Guests may not join this room: paste a token.",
  4005: "The room is full.",
  4006: "You are banned from this room",
  4007: "You were removed from the room",
  4008: "The connection timed out.",
};
const ERROR_WORDS = {
  rate_limited: "You are sending too fast.",
  muted: "You are muted.",
  too_long: "That message is too long.",
  filtered: "That message was refused by the room's word filter.",
  forbidden: "You are not allowed to do that.",
  not_found: "No such member or message.",
  unavailable: "The server cannot store messages right now; try again shortly.",
  bad_request: "The server did not accept that.",
  not_stored: "A message could not be stored and was dropped.",
  conflict: "A message conflicted with another server; it was dropped.",
};

const S = {
  ws: null,
  auth: null, // {name} or {token}
  room: "",
  me: null,
  myIds: new Set(), // every id this page had (a guest gets a new one per connection)
  epoch: null,
  lastSeq: 0,
  bySeq: new Map(), // seq -> li
  oldest: null,
  more: false,
  loadingOlder: false,
  pending: new Map(), // client_id -> {text, li, stale}: stale once its connection is gone
  replayUntil: null, // the seq a served resume's replay ends at
  nextId: 0,
  members: new Map(),
  memberCount: 0,
  attempt: 0,
  retryTimer: null,
  countdown: null,
  leaving: false,
  typingSent: 0,
  typers: new Map(), // id -> {name, until}
  // direct messages
  convs: new Map(), // other id -> {with, name, unread, msgs: Map seq->msg, readByThem, online, lastSeen}
  open: null,
  dmPending: new Map(), // client_id -> {with, text, li}
};

function isMod() {
  return S.me && RANK[S.me.role] >= RANK.moderator;
}
function isTokenUser() {
  return S.me && !S.me.guest;
}

function time(ts) {
  const d = new Date(ts);
  return d.toLocaleTimeString([], { hour: "2-digit", minute: "2-digit" });
}

function setStatus(text, cls) {
  const s = $("status");
  s.textContent = text;
  s.className = "status " + (cls || "");
}

function banner(text, kind) {
  const b = $("banner");
  if (!text) {
    b.hidden = true;
    b.textContent = "";
    return;
  }
  b.hidden = false;
  b.className = "banner " + (kind || "");
  b.textContent = text;
}

// ---------------------------------------------------------------- joining

function start(ev) {
  ev.preventDefault();
  const room = $("join-room").value.trim();
  const name = $("join-name").value.trim();
  const token = $("join-token").value.trim();
  $("join-error").textContent = "";
  if (!room) return;
  if (!name && !token) {
    $("join-error").textContent = "Enter a name, or paste a token.";
    return;
  }
  S.auth = token ? { token } : { name };
  S.room = room;
  S.info = null;
  S.epoch = null;
  S.lastSeq = 0;
  S.leaving = false;
  S.attempt = 0;
  S.justJoined = true;
  clearLog();
  S.convs.clear();
  S.open = null;
  $("title").textContent = room;
  document.title = room + " · Chat";
  connect();
}

async function lookup() {
  const r = await fetch("/api/v1/join/" + encodeURIComponent(S.room), {
    headers: { accept: "application/json" },
  });
  let body = null;
  try {
    body = await r.json();
  } catch (_) {
    body = null;
  }
  if (r.status === 404) throw Object.assign(new Error(`There is no room "${S.room}" on this server.`), { fatal: true });
  if (!r.ok || !body || !body.data) throw new Error((body && body.message) || `lookup failed (${r.status})`);
  return { ...body.data, room: S.room };
}

function wsUrl(info) {
  const q = new URLSearchParams(S.auth);
  if (S.epoch !== null) {
    q.set("since", String(S.lastSeq));
    q.set("epoch", String(S.epoch));
  }
  if (info.url) return `${info.url}?${q}`;
  const scheme = location.protocol === "https:" ? "wss" : "ws";
  return `${scheme}://${location.hostname}:${info.port}/?${q}`;
}

async function connect() {
  clearTimeout(S.retryTimer);
  setStatus("connecting…");
  let info;
  try {
    info = await lookup();
    S.info = info;
  } catch (e) {
    if (e.fatal) return failJoin(S.epoch === null ? e.message : `The room "${S.room}" has ended.`);
    // The master may be away while the room runs on: try the port we know.
    if (!S.info || S.info.room !== S.room) return retry(e.message);
    info = S.info;
  }
  if (S.leaving) return;
  const ws = new WebSocket(wsUrl(info));
  S.ws = ws;
  ws.onmessage = (ev) => {
    let f;
    try {
      f = JSON.parse(ev.data);
    } catch (_) {
      return;
    }
    if (ws === S.ws) handle(f);
  };
  ws.onclose = (ev) => {
    if (ws !== S.ws) return;
    S.ws = null;
    onClosed(ev.code, ev.reason);
  };
}

function onClosed(code, reason) {
  if (S.leaving) return;
  const words = CLOSE_WORDS[code];
  if (FATAL.has(code)) {
    const text = words ? words + (reason && code >= 4000 && code !== 4002 ? `: ${reason}` : "") : reason;
    if (S.me === null || code !== 4007) return failJoin(text || `closed (${code})`);
    return failJoin(text);
  }
  if (code === 1012) {
    S.attempt = 0;
    return retry(words, 0);
  }
  retry(words || "The connection was lost.");
}

function retry(why, delay) {
  setStatus("offline", "offline");
  // How many times this page went offline (a reconnect can be quicker than
  // anyone looking: the count stays).
  const st = $("status");
  st.dataset.drops = String(Number(st.dataset.drops || 0) + 1);
  st.dataset.lastOffline = why || "";
  $("send").disabled = true;
  const ms = delay !== undefined ? delay : Math.min(15000, 500 * 2 ** S.attempt++) * (0.75 + Math.random() / 2);
  let left = Math.ceil(ms / 1000);
  const show = () => banner(`Offline. ${why || ""} Reconnecting${left > 0 ? ` in ${left} s` : ""}…`, "error");
  show();
  clearInterval(S.countdown);
  S.countdown = setInterval(() => {
    left = Math.max(0, left - 1);
    show();
  }, 1000);
  S.retryTimer = setTimeout(() => {
    clearInterval(S.countdown);
    connect();
  }, ms);
}

function failJoin(text) {
  clearTimeout(S.retryTimer);
  clearInterval(S.countdown);
  S.ws = null;
  setStatus("not connected");
  banner(text, "error");
  $("join-error").textContent = text;
  showJoin(true);
}

function showJoin(show) {
  $("join").hidden = !show;
  $("chat").hidden = show;
  $("leave").hidden = show;
  if (show) $("join-room").focus();
}

function leave() {
  S.leaving = true;
  clearTimeout(S.retryTimer);
  clearInterval(S.countdown);
  if (S.ws) S.ws.close(1000, "left");
  S.ws = null;
  S.me = null;
  banner("");
  setStatus("not connected");
  showJoin(true);
}

function send(frame) {
  if (!S.ws || S.ws.readyState !== WebSocket.OPEN) return false;
  S.ws.send(JSON.stringify(frame));
  return true;
}

// ---------------------------------------------------------------- frames

function handle(f) {
  switch (f.type) {
    case "welcome": return onWelcome(f);
    case "message": return addMessage(f, false);
    case "ack": return onAck(f);
    case "history": return onHistory(f);
    case "deleted": return onDeleted(f);
    case "joined": return onJoined(f.user);
    case "left": return onLeft(f.user);
    case "members_changed": return onMembersChanged(f);
    case "members":
      for (const m of f.members) S.members.set(m.id, m);
      if (f.more && f.members.length) send({ type: "members", after: f.members[f.members.length - 1].id });
      return renderMembers();
    case "typing": return onTyping(f.user);
    case "whisper": return onWhisper(f);
    case "notice":
      system(`Notice from the operators: ${f.text}`, "notice");
      return banner(`Notice: ${f.text}`);
    case "closing": return onClosing(f);
    case "muted":
      return system(`${f.user.name} is muted for ${duration(f.secs)} by ${f.by.name}.`);
    case "error": return onError(f);
    case "dm": return onDm(f);
    case "dm_history": return onDmHistory(f);
    case "read": return onRead(f);
    case "presence": return onPresence(f);
    default: return undefined;
  }
}

function onWelcome(f) {
  S.attempt = 0;
  clearInterval(S.countdown);
  banner("");
  S.me = f.you;
  S.myIds.add(f.you.id);
  setStatus(`online as ${f.you.name}`, "online");
  $("send").disabled = false;
  showJoin(false);
  $("log").dataset.resumed = String(f.resumed);
  for (const p of S.pending.values()) p.stale = true;
  S.replayUntil = null;
  if (!f.resumed) {
    // A fresh join, or a resume that could not be served: reload.
    clearLog();
    for (const m of f.history) addMessage(m, true);
    S.lastSeq = f.seq;
    S.oldest = f.history.length ? f.history[0].seq : f.seq + 1;
    S.more = S.oldest > 1;
    settlePendingAgainst();
    scrollToEnd($("log"));
  } else {
    for (const seq of f.deleted || []) markDeleted(seq);
    S.replayUntil = f.seq;
    if (S.lastSeq >= f.seq) settleStale();
  }
  updateOlder();
  S.epoch = f.epoch;
  S.members.clear();
  for (const m of f.members) S.members.set(m.id, m);
  S.memberCount = f.member_count;
  if (f.member_count > f.members.length && f.members.length) {
    send({ type: "members", after: f.members[f.members.length - 1].id });
  }
  renderMembers();
  if (isTokenUser()) {
    $("dms").hidden = false;
    if (f.dms) {
      for (const c of f.dms.conversations) {
        const conv = convOf(c.with);
        conv.unread = c.unread;
        if (c.last) {
          addDmToConv(conv, c.last);
          if (c.last.from.id === c.with) conv.name = c.last.from.name;
        }
      }
    }
    watchAll();
    renderConvs();
    if (S.open) send({ type: "dm_history", with: S.open, limit: 50 });
  } else {
    $("dms").hidden = true;
  }
  // After the join form: the message box takes the focus (keyboard use).
  if (S.justJoined || document.activeElement === document.body) $("text").focus();
  S.justJoined = false;
}

function clearLog() {
  $("log").replaceChildren();
  S.bySeq.clear();
  S.oldest = null;
  S.more = false;
}

function messageLi(m) {
  const li = el("li", "msg");
  li.dataset.seq = String(m.seq);
  const t = el("time", "time", time(m.ts));
  t.dateTime = new Date(m.ts).toISOString();
  li.append(t);
  const n = el("span", "name" + (m.from.guest ? " guest" : ""), m.from.name);
  n.title = m.from.id;
  li.append(n, el("span", "text"));
  li.dataset.from = m.from.id;
  fillText(li, m);
  if (isMod() && !m.deleted) addDeleteButton(li, m.seq);
  return li;
}

function fillText(li, m) {
  const text = li.querySelector(".text");
  if (m.deleted) {
    li.classList.add("deleted");
    text.textContent = "(message deleted)";
    const tools = li.querySelector(".tools");
    if (tools) tools.remove();
  } else {
    text.textContent = m.text;
  }
}

function addDeleteButton(li, seq) {
  const b = el("button", "small tools", "Delete");
  b.type = "button";
  b.setAttribute("aria-label", `Delete message ${seq}`);
  b.onclick = () => send({ type: "delete", seq });
  li.append(b);
}

// Inserts a room message in seq order; a seq already shown is ignored.
function addMessage(m, quiet) {
  if (S.bySeq.has(m.seq)) return;
  if (!quiet) S.lastSeq = Math.max(S.lastSeq, m.seq);
  // A message of ours that was in flight when the connection dropped comes
  // back in the replay: it replaces its pending line.
  if (S.myIds.has(m.from.id)) {
    for (const [cid, p] of S.pending) {
      if (p.text === m.text && p.stale) {
        p.li.remove();
        S.pending.delete(cid);
        break;
      }
    }
  }
  const li = messageLi(m);
  insertBySeq(li, m.seq);
  if (S.oldest === null || m.seq < S.oldest) S.oldest = m.seq;
  if (S.replayUntil !== null && S.lastSeq >= S.replayUntil) settleStale();
}

// After a served resume's replay: a message sent on the lost connection
// that the replay did not hold was not stored.
function settleStale() {
  S.replayUntil = null;
  for (const [cid, p] of S.pending) {
    if (p.stale) failPending(cid, "not sent (connection lost): send it again");
  }
}

function insertBySeq(li, seq) {
  const log = $("log");
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  S.bySeq.set(seq, li);
  // Pending lines (no seq yet) stay at the end.
  let before = null;
  const kids = log.children;
  for (let i = kids.length - 1; i >= 0; i--) {
    const k = kids[i];
    const s = k.dataset.seq ? Number(k.dataset.seq) : Infinity;
    if (s < seq) break;
    if (k.dataset.seq || k.classList.contains("pending")) before = k;
  }
  log.insertBefore(li, before);
  if (atEnd) scrollToEnd(log);
}

function scrollToEnd(log) {
  log.scrollTop = log.scrollHeight;
}

function system(text, cls) {
  const li = el("li", "system " + (cls || ""), text);
  const log = $("log");
  const atEnd = log.scrollHeight - log.scrollTop - log.clientHeight < 40;
  log.append(li);
  if (atEnd) scrollToEnd(log);
}

function say(text) {
  const to = $("to").value;
  if (to) {
    if (send({ type: "whisper", to, text })) {
      const m = S.members.get(to);
      const li = el("li", "whisper");
      li.append(el("span", "time", time(Date.now())), el("span", "name", `to ${m ? m.name : to}`), el("span", "text", text));
      $("log").append(li);
      scrollToEnd($("log"));
    }
    return;
  }
  const client_id = `c${Date.now().toString(36)}-${S.nextId++}`;
  const li = el("li", "msg pending");
  li.append(el("span", "time", time(Date.now())), el("span", "name", S.me.name), el("span", "text", text), el("span", "state", "sending…"));
  $("log").append(li);
  scrollToEnd($("log"));
  S.pending.set(client_id, { text, li, stale: false });
  if (!send({ type: "say", text, client_id })) failPending(client_id, "not sent: offline");
}

function failPending(cid, why) {
  const p = S.pending.get(cid);
  if (!p) return;
  S.pending.delete(cid);
  p.li.classList.remove("pending");
  p.li.classList.add("failed");
  const st = p.li.querySelector(".state");
  if (st) st.textContent = why;
}

function onAck(f) {
  if (f.conversation) return onDmAck(f);
  S.lastSeq = Math.max(S.lastSeq, f.seq);
  const p = S.pending.get(f.client_id);
  S.pending.delete(f.client_id);
  if (S.bySeq.has(f.seq)) {
    if (p) p.li.remove();
    return;
  }
  const m = { seq: f.seq, from: S.me, text: p ? p.text : "", ts: Date.now() };
  if (p) p.li.remove();
  insertBySeq(messageLi(m), f.seq);
}

// After a reload from welcome.history (which replaced the pending lines
// found in it, see addMessage): the others were lost with the connection
// (their ack will not come on a new one).
function settlePendingAgainst() {
  for (const [cid, p] of S.pending) {
    failPending(cid, "not sent (connection lost): send it again");
    $("log").append(p.li);
  }
}

function onHistory(f) {
  S.loadingOlder = false;
  const log = $("log");
  const before = log.scrollHeight;
  const top = log.scrollTop;
  for (const m of f.messages) {
    if (S.bySeq.has(m.seq)) continue;
    const li = messageLi(m);
    S.bySeq.set(m.seq, li);
    // Older than everything shown: goes before the first message line.
    let first = null;
    for (const k of log.children) {
      if (k.dataset.seq && Number(k.dataset.seq) > m.seq) {
        first = k;
        break;
      }
    }
    log.insertBefore(li, first);
    if (S.oldest === null || m.seq < S.oldest) S.oldest = m.seq;
  }
  S.more = f.more;
  log.scrollTop = top + (log.scrollHeight - before);
  updateOlder();
}

function loadOlder() {
  if (!S.more || S.loadingOlder || S.oldest === null) return;
  if (send({ type: "history", before: S.oldest, limit: 50 })) S.loadingOlder = true;
}

function updateOlder() {
  $("older").hidden = !S.more;
  // Nothing to scroll yet: load older messages until the log fills.
  const log = $("log");
  if (S.more && log.scrollHeight <= log.clientHeight + 40) loadOlder();
}

function markDeleted(seq) {
  const li = S.bySeq.get(seq);
  if (li) fillText(li, { deleted: true });
}

function onDeleted(f) {
  markDeleted(f.seq);
}

function onJoined(u) {
  if (!S.members.has(u.id)) S.memberCount += 1;
  S.members.set(u.id, u);
  renderMembers();
  system(`${u.name} joined.`);
}

function onLeft(u) {
  if (S.members.delete(u.id)) S.memberCount = Math.max(0, S.memberCount - 1);
  S.typers.delete(u.id);
  renderMembers();
  renderTyping();
  system(`${u.name} left.`);
}

// A large room's arrivals and departures, gathered (at most one a second).
function onMembersChanged(f) {
  for (const u of f.left) {
    S.members.delete(u.id);
    S.typers.delete(u.id);
  }
  for (const u of f.joined) S.members.set(u.id, u);
  S.memberCount = f.member_count;
  renderMembers();
  renderTyping();
  const others = f.joined.filter((u) => !S.myIds.has(u.id));
  const parts = [];
  if (others.length) parts.push(`${others.map((u) => u.name).join(", ")} joined`);
  if (f.left.length) parts.push(`${f.left.map((u) => u.name).join(", ")} left`);
  if (f.more) parts.push("and others came and went");
  if (parts.length) system(`${parts.join("; ")}.`);
}

function renderMembers() {
  const ul = $("members");
  const list = [...S.members.values()].sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : a.id < b.id ? -1 : 1));
  const items = list.map((m) => {
    const li = el("li");
    li.dataset.id = m.id;
    li.append(el("span", "name" + (m.guest ? " guest" : ""), m.name));
    if (m.id === S.me.id) li.append(el("span", "role", "(you)"));
    if (m.role && m.role !== "member" && m.role !== "guest") li.append(el("span", "role", m.role));
    if (m.connections > 1) li.append(el("span", "devices", `${m.connections} devices`));
    if (isMod() && m.id !== S.me.id && RANK[m.role] < RANK[S.me.role]) {
      const kick = el("button", "small", "Kick");
      kick.type = "button";
      kick.setAttribute("aria-label", `Kick ${m.name}`);
      kick.onclick = () => send({ type: "kick", user: m.id });
      const mute = el("button", "small", "Mute 5 min");
      mute.type = "button";
      mute.setAttribute("aria-label", `Mute ${m.name} for 5 minutes`);
      mute.onclick = () => send({ type: "mute", user: m.id, secs: 300 });
      li.append(kick, mute);
    }
    return li;
  });
  ul.replaceChildren(...items);
  $("member-count").textContent = String(Math.max(S.memberCount, S.members.size));
  // The whisper target list.
  const sel = $("to");
  const keep = sel.value;
  const opts = [el("option", "", "Everyone")];
  opts[0].value = "";
  for (const m of list) {
    if (m.id === S.me.id) continue;
    const o = el("option", "", `whisper to ${m.name}`);
    o.value = m.id;
    opts.push(o);
  }
  sel.replaceChildren(...opts);
  sel.value = S.members.has(keep) ? keep : "";
}

function onTyping(u) {
  S.typers.set(u.id, { name: u.name, until: Date.now() + 4000 });
  renderTyping();
  setTimeout(renderTyping, 4100);
}

function renderTyping() {
  const now = Date.now();
  const names = [];
  for (const [id, t] of S.typers) {
    if (t.until < now) S.typers.delete(id);
    else names.push(t.name);
  }
  $("typing").textContent = names.length === 0 ? "" : names.length === 1 ? `${names[0]} is typing…` : `${names.join(", ")} are typing…`;
}

function onWhisper(f) {
  const li = el("li", "whisper");
  const mine = S.myIds.has(f.from.id);
  li.append(
    el("span", "time", time(f.ts)),
    el("span", "name", mine ? `to ${f.to.name}` : `${f.from.name} whispers`),
    el("span", "text", f.text),
  );
  const log = $("log");
  log.append(li);
  scrollToEnd(log);
}

function onClosing(f) {
  if (f.in_secs === undefined || f.in_secs === null) {
    banner(`The room is closing: ${f.reason}`);
    system(`The room is closing: ${f.reason}`);
    return;
  }
  let left = f.in_secs;
  clearInterval(S.closingTimer);
  const show = () => banner(`The room closes in ${duration(left)} (${f.reason}).`);
  show();
  S.closingTimer = setInterval(() => {
    left -= 1;
    if (left <= 0) clearInterval(S.closingTimer);
    else show();
  }, 1000);
}

function duration(secs) {
  if (secs < 90) return `${secs} s`;
  if (secs < 5400) return `${Math.round(secs / 60)} min`;
  return `${Math.round(secs / 3600)} h`;
}

function onError(f) {
  let words = ERROR_WORDS[f.code] || "The server refused that.";
  if (f.retry_after_ms) words += ` Try again in ${Math.ceil(f.retry_after_ms / 1000)} s.`;
  if (f.code === "bad_request" || f.code === "not_found" || f.code === "forbidden") words += ` (${f.message})`;
  if (f.client_id && S.pending.has(f.client_id)) failPending(f.client_id, words);
  else if (f.client_id && S.dmPending.has(f.client_id)) failDm(f.client_id, words);
  else system(words, "error");
  banner(words, "error");
  clearTimeout(S.errorTimer);
  S.errorTimer = setTimeout(() => {
    if ($("banner").textContent === words) banner("");
  }, 6000);
}

// ---------------------------------------------------------------- direct messages

function convOf(other) {
  let c = S.convs.get(other);
  if (!c) {
    c = { with: other, name: other, unread: 0, msgs: new Map(), readByThem: 0, online: false, lastSeen: null };
    S.convs.set(other, c);
  }
  return c;
}

function otherOf(m) {
  return S.myIds.has(m.from.id) ? m.to : m.from.id;
}

function addDmToConv(conv, m) {
  conv.msgs.set(m.seq, m);
  conv.lastTs = Math.max(conv.lastTs || 0, m.ts);
}

function watchAll() {
  send({ type: "watch", users: [...S.convs.keys()].slice(0, 200) });
}

function onDm(f) {
  const other = otherOf(f);
  const isNew = !S.convs.has(other);
  const conv = convOf(other);
  if (f.from.id === other) conv.name = f.from.name;
  if (conv.msgs.has(f.seq)) return;
  addDmToConv(conv, f);
  const mine = S.myIds.has(f.from.id);
  if (!mine) {
    if (S.open === other && !document.hidden) send({ type: "read", with: other, seq: f.seq });
    else conv.unread += 1;
  }
  if (isNew) watchAll();
  renderConvs();
  if (S.open === other) renderDmLog();
}

function onDmHistory(f) {
  const conv = convOf(f.with);
  for (const m of f.messages) {
    addDmToConv(conv, m);
    if (m.from.id === f.with) conv.name = m.from.name;
  }
  renderConvs();
  if (S.open === f.with) {
    renderDmLog();
    markOpenRead();
  }
}

function onDmAck(f) {
  const p = S.dmPending.get(f.client_id);
  S.dmPending.delete(f.client_id);
  if (!p) return;
  const conv = convOf(p.with);
  if (!conv.msgs.has(f.seq)) {
    addDmToConv(conv, { conversation: f.conversation, seq: f.seq, from: { id: S.me.id, name: S.me.name }, to: p.with, text: p.text, ts: Date.now() });
  }
  renderConvs();
  if (S.open === p.with) renderDmLog();
}

function failDm(cid, why) {
  const p = S.dmPending.get(cid);
  S.dmPending.delete(cid);
  if (p && p.li) {
    p.li.classList.remove("pending");
    p.li.classList.add("failed");
    const st = p.li.querySelector(".state");
    if (st) st.textContent = why;
  }
}

function onRead(f) {
  if (!f.conversation) return;
  // The other party is whoever is not us in the conversation id.
  if (S.myIds.has(f.by)) {
    for (const c of S.convs.values()) {
      const any = c.msgs.values().next().value;
      if (any && any.conversation === f.conversation) c.unread = 0;
    }
    renderConvs();
    return;
  }
  const conv = convOf(f.by);
  conv.readByThem = Math.max(conv.readByThem, f.seq);
  if (S.open === f.by) renderDmLog();
}

function onPresence(f) {
  const conv = S.convs.get(f.user);
  if (!conv) return;
  conv.online = f.online;
  conv.lastSeen = f.last_seen;
  renderConvs();
  if (S.open === f.user) renderDmTitle();
}

function renderConvs() {
  const list = [...S.convs.values()].sort((a, b) => (b.lastTs || 0) - (a.lastTs || 0));
  let total = 0;
  const items = list.map((c) => {
    total += c.unread;
    const li = el("li");
    const b = el("button", "conv");
    b.type = "button";
    b.dataset.with = c.with;
    if (S.open === c.with) b.setAttribute("aria-current", "true");
    const dot = el("span", "dot" + (c.online ? " online" : ""));
    dot.title = c.online ? "online" : "offline";
    b.append(dot, el("span", "label", c.name === c.with ? c.with : `${c.name} (${c.with})`));
    b.setAttribute("aria-label", `${c.name}, ${c.online ? "online" : "offline"}${c.unread ? `, ${c.unread} unread` : ""}`);
    if (c.unread) b.append(el("span", "badge unread", String(c.unread)));
    b.onclick = () => openConv(c.with);
    li.append(b);
    return li;
  });
  $("conversations").replaceChildren(...items);
  const badge = $("dm-unread");
  badge.hidden = total === 0;
  badge.textContent = String(total);
}

function openConv(other) {
  if (!other || S.myIds.has(other)) return;
  const isNew = !S.convs.has(other);
  convOf(other);
  S.open = other;
  $("dm-view").hidden = false;
  if (isNew) watchAll();
  send({ type: "dm_history", with: other, limit: 50 });
  renderConvs();
  renderDmTitle();
  renderDmLog();
  markOpenRead();
  $("dm-text").focus();
}

function markOpenRead() {
  const conv = S.convs.get(S.open);
  if (!conv) return;
  let last = 0;
  for (const m of conv.msgs.values()) if (!S.myIds.has(m.from.id)) last = Math.max(last, m.seq);
  if (conv.unread && last) send({ type: "read", with: S.open, seq: last });
  conv.unread = 0;
  renderConvs();
}

function renderDmTitle() {
  const conv = S.convs.get(S.open);
  if (!conv) return;
  const seen = conv.online ? "online" : conv.lastSeen ? `last seen ${time(conv.lastSeen)}` : "offline";
  $("dm-title").textContent = `${conv.name} · ${seen}`;
}

function renderDmLog() {
  const conv = S.convs.get(S.open);
  const log = $("dm-log");
  if (!conv) return log.replaceChildren();
  const msgs = [...conv.msgs.values()].sort((a, b) => a.seq - b.seq);
  const items = msgs.map((m) => {
    const mine = S.myIds.has(m.from.id);
    const li = el("li", "msg" + (mine ? " mine" : ""));
    li.dataset.seq = String(m.seq);
    li.append(el("span", "time", time(m.ts)), el("span", "name", mine ? "you" : m.from.name), el("span", "text", m.text));
    if (mine) {
      const read = conv.readByThem >= m.seq;
      li.append(el("span", "state" + (read ? " read" : " sent"), read ? "read" : "sent"));
    }
    return li;
  });
  for (const p of S.dmPending.values()) if (p.with === S.open) items.push(p.li);
  log.replaceChildren(...items);
  scrollToEnd(log);
}

function sendDm(text) {
  const other = S.open;
  if (!other) return;
  const client_id = `d${Date.now().toString(36)}-${S.nextId++}`;
  const li = el("li", "msg mine pending");
  li.append(el("span", "time", time(Date.now())), el("span", "name", "you"), el("span", "text", text), el("span", "state", "sending…"));
  S.dmPending.set(client_id, { with: other, text, li });
  if (!send({ type: "dm", to: other, text, client_id })) failDm(client_id, "not sent: offline");
  renderDmLog();
}

// ---------------------------------------------------------------- wiring

function init() {
  const params = new URLSearchParams(location.search);
  if (params.get("room")) $("join-room").value = params.get("room");
  $("join").addEventListener("submit", start);
  $("leave").addEventListener("click", leave);
  $("compose").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const input = $("text");
    const text = input.value;
    if (!text.trim() || !S.me) return;
    say(text);
    input.value = "";
  });
  $("text").addEventListener("input", () => {
    const now = Date.now();
    if (now - S.typingSent > 2000 && $("text").value) {
      S.typingSent = now;
      send({ type: "typing" });
    }
  });
  $("log").addEventListener("scroll", () => {
    if ($("log").scrollTop < 40) loadOlder();
  });
  $("older").addEventListener("click", loadOlder);
  $("dm-new").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const who = $("dm-new-user").value.trim();
    if (who) openConv(who);
    $("dm-new-user").value = "";
  });
  $("dm-close").addEventListener("click", () => {
    S.open = null;
    $("dm-view").hidden = true;
    renderConvs();
  });
  $("dm-compose").addEventListener("submit", (ev) => {
    ev.preventDefault();
    const text = $("dm-text").value;
    if (!text.trim()) return;
    sendDm(text);
    $("dm-text").value = "";
  });
  document.addEventListener("visibilitychange", () => {
    if (!document.hidden && S.open) markOpenRead();
  });
  showJoin(true);
}

init();
