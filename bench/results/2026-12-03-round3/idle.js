// Opens N idle guest connections to a room port, waits for each welcome,
// holds them until SIGTERM.
const WebSocket = require(process.env.WS_MODULE || 'ws');
const [port, n] = [process.argv[2], Number(process.argv[3])];
let ok = 0, i = 0; const socks = [];
function open() {
  if (i >= n) return;
  const k = i++;
  const ws = new WebSocket(`ws://127.0.0.1:${port}/?name=idle${k}`);
  ws.on('message', (d) => { const m = JSON.parse(d); if (m.type === 'welcome') { ok++; if (ok === n) console.log('all joined', ok); open(); } });
  ws.on('error', (e) => { console.error('err', k, e.message); });
  socks.push(ws);
}
for (let j = 0; j < 32; j++) open();
process.on('SIGTERM', () => process.exit(0));
setInterval(() => {}, 1000);
