// Seed 004's Workerman push.php, ported as-is to Node 20 + `ws` 8: the peer pushwire is
// compared against (issue 4). Same semantics, same single process/thread, no extras.
// Usage: node node-seed-push.js WS_PORT PUSH_PORT [HOST=127.0.0.1]   (0 = any free port)
'use strict';
const net = require('net');
const { WebSocketServer } = require('ws'); // NODE_PATH=/tmp/peer/node_modules

const [wsPort, pushPort, host = '127.0.0.1'] = process.argv.slice(2);
if (!wsPort || !pushPort) {
  console.error('usage: node node-seed-push.js WS_PORT PUSH_PORT [HOST]');
  process.exit(2);
}

// $worker->uidConnections: uid -> the one connection of that uid. A second connection with
// the same uid overwrites the first (which then never receives anything again), exactly as
// the seed's `$worker->uidConnections[$connection->uid] = $connection;`.
const uidConnections = new Map();

const wss = new WebSocketServer({ host, port: Number(wsPort) }); // ws 8 defaults: no deflate
wss.on('error', (e) => { console.error('ws listen:', e.message); process.exit(1); });
wss.on('connection', (conn) => {
  conn.on('error', () => {}); // a reset browser must not crash the process
  conn.on('message', (data) => {
    // First frame = uid (no verification, as in the seed); later frames are ignored.
    if (conn.uid === undefined) {
      conn.uid = data.toString();
      uidConnections.set(conn.uid, conn);
    }
  });
  // onClose: the seed unsets the uid's entry unconditionally -- even when it now points at a
  // newer connection of the same uid (overwrite semantics, kept on purpose).
  conn.on('close', () => { if (conn.uid !== undefined) uidConnections.delete(conn.uid); });
});

// sendMessageByUid(): true if the uid has a connection (send is fire-and-forget).
function sendMessageByUid(uid, message) {
  const conn = uidConnections.get(uid);
  if (conn === undefined) return false;
  conn.send(message);
  return true;
}

// The internal "text://" port: one JSON object per line, reply `ok`/`fail` + "\n" per line.
// The line (without its "\n", as Workerman's Text protocol hands it over) is pushed verbatim.
const inner = net.createServer({ noDelay: true }, (sock) => { // Workerman sets TCP_NODELAY too
  sock.setEncoding('utf8');
  sock.on('error', () => {}); // backends that reset (churn) must not crash the process
  let buf = '';
  sock.on('data', (chunk) => {
    buf += chunk;
    let start = 0, nl;
    while ((nl = buf.indexOf('\n', start)) !== -1) {
      let line = buf.slice(start, nl);
      start = nl + 1;
      if (line.endsWith('\r')) line = line.slice(0, -1); // Text protocol rtrims "\r\n"
      let uid;
      try { uid = JSON.parse(line).uid; } catch (e) { uid = undefined; } // bad JSON -> fail
      // PHP array keys: a numeric uid finds the same entry as its string form.
      const key = typeof uid === 'string' || typeof uid === 'number' ? String(uid) : undefined;
      sock.write(key !== undefined && sendMessageByUid(key, line) ? 'ok\n' : 'fail\n');
    }
    buf = buf.slice(start);
    if (buf.length > 10 * 1024 * 1024) sock.destroy(); // Workerman's 10 MB maxPackageSize
  });
});
inner.on('error', (e) => { console.error('push listen:', e.message); process.exit(1); });
inner.listen(Number(pushPort), host);

// Not in the seed: say where both ports ended up (port 0 = the kernel picks), in the same
// words as pushwire's own log line, so scripts/bench-compare.sh can start either the same way.
Promise.all([
  new Promise((ok) => (wss.address() ? ok() : wss.on('listening', ok))),
  new Promise((ok) => (inner.listening ? ok() : inner.on('listening', ok))),
]).then(() => {
  const w = wss.address(), p = inner.address();
  console.error(`listening ws=${w.address}:${w.port} push=${p.address}:${p.port}`);
});
