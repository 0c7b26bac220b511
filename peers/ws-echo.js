// Peer: Node.js with the ws package, its documented echo server.
// Usage: node ws-echo.js HOST:PORT
const { WebSocketServer } = require('ws');
const [host, port] = process.argv[2].split(':');
const wss = new WebSocketServer({ host, port: Number(port) });
wss.on('connection', (ws) => {
  ws.on('message', (data, isBinary) => ws.send(data, { binary: isBinary }));
});
wss.on('listening', () => console.log(`listening on ${host}:${port}`));
