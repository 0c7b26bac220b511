// Peer: Bun's built-in WebSocket server (Bun.serve), its documented echo.
// Usage: bun bun-echo.js HOST:PORT
const [hostname, port] = process.argv[2].split(':');
Bun.serve({
  hostname,
  port: Number(port),
  fetch(req, server) {
    if (server.upgrade(req)) return;
    return new Response('WebSocket upgrade expected', { status: 426 });
  },
  websocket: {
    message(ws, message) {
      ws.send(message);
    },
  },
});
console.log(`listening on ${hostname}:${port}`);
