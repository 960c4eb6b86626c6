'use strict';
// A Node.js chat room with the same client protocol shapes as chatserver's
// rooms (docs/PROTOCOL.md): guests join with ?name=, get `welcome`
// (members, last 50 messages), others get `joined`/`left`; `say` goes to
// everyone else as `message {seq, from, text, ts}` and the sender gets `ack`;
// `ping` gets `pong`. No flood control, tokens or moderation: the comparison
// peer for chatbench's fanout, idle and isolation benchmarks.
//
// Usage: node chat-peer.js --ports 41000[,41001...]
// One room per port, all in this one process (one event loop). Prints
// `{"listening":[ports...]}` on stdout once every port accepts connections.

const http = require('http');
const crypto = require('crypto');
const { WebSocketServer } = require('ws');

const HISTORY = 50;

function nowMs() {
  return Date.now();
}

function byNameThenId(a, b) {
  if (a.name < b.name) return -1;
  if (a.name > b.name) return 1;
  return a.id < b.id ? -1 : a.id > b.id ? 1 : 0;
}

// Serves one room on an http server; resolves once it listens.
function startRoom(port, name, host = '127.0.0.1') {
  const server = http.createServer((req, res) => {
    res.writeHead(200, { 'Content-Type': 'text/plain; charset=utf-8' });
    res.end(name);
  });
  const wss = new WebSocketServer({ server, maxPayload: 64 * 1024 });
  const epoch = Math.floor(Math.random() * 2 ** 40) + 1;
  let seq = 0;
  const history = [];
  const users = new Map(); // id -> {id, name, role, ws}

  function member(u) {
    return { id: u.id, name: u.name, role: u.role, connections: 1 };
  }

  function broadcast(data, except) {
    for (const u of users.values()) {
      if (u.ws !== except && u.ws.readyState === 1) u.ws.send(data);
    }
  }

  wss.on('connection', (ws, req) => {
    const url = new URL(req.url, 'http://x');
    const nm = (url.searchParams.get('name') || '').trim();
    if (!nm || [...nm].length > 64) {
      ws.close(4000, nm ? 'name is too long' : 'a ?token= or a ?name= is required');
      return;
    }
    const u = { id: 'guest:' + crypto.randomBytes(8).toString('hex'), name: nm, role: 'guest', ws };
    users.set(u.id, u);
    const members = [...users.values()].map(member).sort(byNameThenId);
    ws.send(JSON.stringify({
      type: 'welcome', room: name, you: member(u), members,
      history: history.slice(-HISTORY), seq, epoch, resumed: false,
    }));
    broadcast(JSON.stringify({ type: 'joined', user: member(u) }), ws);

    ws.on('message', (data, isBinary) => {
      if (isBinary) {
        ws.send(JSON.stringify({ type: 'error', code: 'binary_not_supported', message: 'binary frames are not supported; send JSON text' }));
        return;
      }
      let m;
      try {
        m = JSON.parse(data.toString());
      } catch (e) {
        ws.send(JSON.stringify({ type: 'error', code: 'bad_json', message: 'invalid JSON' }));
        return;
      }
      if (m.type === 'say') {
        if (typeof m.text !== 'string' || !m.text.trim()) {
          ws.send(JSON.stringify({ type: 'error', code: 'bad_request', message: 'text is required' }));
          return;
        }
        seq += 1;
        const msg = { seq, from: { id: u.id, name: u.name }, text: m.text, ts: nowMs() };
        history.push(msg);
        if (history.length > 1000) history.shift();
        broadcast(JSON.stringify({ type: 'message', ...msg }), ws);
        const ack = { type: 'ack' };
        if (m.client_id != null) ack.client_id = m.client_id;
        ack.seq = seq;
        ws.send(JSON.stringify(ack));
      } else if (m.type === 'ping') {
        ws.send('{"type":"pong"}');
      } else {
        ws.send(JSON.stringify({ type: 'error', code: 'unknown_type', message: 'unknown type' }));
      }
    });
    ws.on('close', () => {
      if (users.delete(u.id)) {
        broadcast(JSON.stringify({ type: 'left', user: { id: u.id, name: u.name } }));
      }
    });
    ws.on('error', () => {});
  });

  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

module.exports = { startRoom };

if (require.main === module) {
  const i = process.argv.indexOf('--ports');
  if (i < 0) {
    console.error('usage: node chat-peer.js --ports P1[,P2...]');
    process.exit(2);
  }
  const ports = process.argv[i + 1].split(',').map(Number);
  Promise.all(ports.map((p, k) => startRoom(p, 'room' + k))).then(() => {
    process.stdout.write(JSON.stringify({ listening: ports }) + '\n');
  }, (e) => {
    console.error(String(e));
    process.exit(1);
  });
  process.on('SIGTERM', () => process.exit(0));
  process.on('SIGINT', () => process.exit(0));
}
