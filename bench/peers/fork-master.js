'use strict';
// A Node.js "master" with the room API of chatserver: POST /api/v1/room/NAME
// (X-API-Key) forks one child process per room (child_process.fork), and
// answers {"data":{"port":N,"message":"Room created"}} once the child reports
// that its ws server listens. GET /api/v1/rooms lists {name, port, pid}.
// The comparison peer of `chatbench spawn`.
//
// Usage: KEY=secret node fork-master.js --port 40000 --room-ports 41000-41999
// Prints {"listening":PORT} on stdout once the API listens.

const http = require('http');
const path = require('path');
const { fork } = require('child_process');

function arg(name, dflt) {
  const i = process.argv.indexOf(name);
  return i >= 0 ? process.argv[i + 1] : dflt;
}

if (process.argv[2] === '--child') {
  // A room: node fork-master.js --child PORT NAME
  const { startRoom } = require('./chat-peer');
  const port = Number(process.argv[3]);
  startRoom(port, process.argv[4]).then(
    () => process.send({ listening: port }),
    (e) => process.send({ error: String(e) }),
  );
  process.on('disconnect', () => process.exit(0));
} else {
  const key = process.env.KEY || '';
  const apiPort = Number(arg('--port', '8080'));
  const [first, last] = arg('--room-ports', '41000-41999').split('-').map(Number);
  let next = first;
  const rooms = new Map(); // name -> {name, port, pid, child}

  function answer(res, status, body) {
    const s = JSON.stringify(body);
    res.writeHead(status, { 'Content-Type': 'application/json', 'Content-Length': Buffer.byteLength(s) });
    res.end(s);
  }

  const server = http.createServer((req, res) => {
    if (req.headers['x-api-key'] !== key) return answer(res, 401, { message: 'Unauthorized' });
    const m = /^\/api\/v1\/room\/([A-Za-z0-9_-]{1,64})$/.exec(req.url);
    if (req.method === 'GET' && req.url === '/api/v1/rooms') {
      return answer(res, 200, { data: [...rooms.values()].map((r) => ({ name: r.name, port: r.port, pid: r.pid })) });
    }
    if (req.method !== 'POST' || !m) return answer(res, 404, { message: 'Not found' });
    req.resume();
    req.on('end', () => {
      const name = m[1];
      const old = rooms.get(name);
      if (old) return answer(res, 200, { data: { port: old.port, message: `${name} already exists` } });
      if (next > last) return answer(res, 200, { data: { port: 0, message: 'No more rooms can be created' } });
      const port = next++;
      const child = fork(path.join(__dirname, 'fork-master.js'), ['--child', String(port), name], { stdio: ['ignore', 'ignore', 'inherit', 'ipc'] });
      const room = { name, port, pid: child.pid, child };
      rooms.set(name, room);
      child.once('message', (msg) => {
        if (msg && msg.listening) answer(res, 200, { data: { port, message: 'Room created' } });
        else {
          rooms.delete(name);
          answer(res, 500, { message: `room could not be created: ${msg && msg.error}` });
        }
      });
      child.once('exit', () => rooms.delete(name));
    });
  });

  function stop() {
    for (const r of rooms.values()) r.child.kill('SIGTERM');
    process.exit(0);
  }
  process.on('SIGTERM', stop);
  process.on('SIGINT', stop);
  server.listen(apiPort, '127.0.0.1', () => {
    process.stdout.write(JSON.stringify({ listening: apiPort }) + '\n');
  });
}
