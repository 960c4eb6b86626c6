'use strict';
// The websocket-shootout protocol on Node.js `ws`: `{"type":"echo",...}` is
// sent back unchanged; `{"type":"broadcast","payload":P}` goes to every
// client (sender included) as {"type":"broadcast","payload":P}, then
// {"type":"broadcastResult","payload":P} to the sender.
// Usage: node shootout-peer.js --port 42000 ; prints {"listening":PORT}.

const { WebSocketServer } = require('ws');

const i = process.argv.indexOf('--port');
const port = Number(i >= 0 ? process.argv[i + 1] : '3334');
const wss = new WebSocketServer({ host: '127.0.0.1', port, maxPayload: 64 * 1024 });

wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => {
    if (isBinary) return;
    const text = data.toString();
    let m;
    try {
      m = JSON.parse(text);
    } catch (e) {
      return;
    }
    if (m.type === 'echo') {
      ws.send(text);
    } else if (m.type === 'broadcast') {
      const p = JSON.stringify(m.payload);
      const all = '{"type":"broadcast","payload":' + p + '}';
      for (const c of wss.clients) {
        if (c.readyState === 1) c.send(all);
      }
      ws.send('{"type":"broadcastResult","payload":' + p + '}');
    }
  });
  ws.on('error', () => {});
});
wss.on('listening', () => process.stdout.write(JSON.stringify({ listening: port }) + '\n'));
process.on('SIGTERM', () => process.exit(0));
process.on('SIGINT', () => process.exit(0));
