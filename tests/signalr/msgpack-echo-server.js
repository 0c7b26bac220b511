// A SignalR hub that answers Echo over the MessagePack hub protocol, made of
// parts nobody here wrote: Node's ws for the WebSocket, and the official
// client's MessagePackHubProtocol (@microsoft/signalr-protocol-msgpack) to
// read every message and write every answer. For loadgen's tests: loadgen's
// invocations must parse, and its checks must accept the official encoder's
// completions. Prints {"port": N}, then serves until its standard input closes.
const { WebSocketServer } = require('ws');
const signalR = require('@microsoft/signalr');
const { MessagePackHubProtocol } = require('@microsoft/signalr-protocol-msgpack');

const protocol = new MessagePackHubProtocol();
const server = new WebSocketServer({ host: '127.0.0.1', port: 0 });

server.on('connection', (socket) => {
  let handshaken = false;
  socket.on('message', (data, isBinary) => {
    if (!handshaken) {
      const request = JSON.parse(data.toString().split('\x1e')[0]);
      const ok = request.protocol === 'messagepack' && request.version === 1;
      socket.send(ok ? '{}\x1e' : '{"error":"messagepack only"}\x1e');
      handshaken = ok;
      return;
    }
    if (!isBinary) {
      socket.close(1003, 'MessagePack travels in binary frames');
      return;
    }
    const bytes = data.buffer.slice(data.byteOffset, data.byteOffset + data.byteLength);
    for (const message of protocol.parseMessages(bytes, signalR.NullLogger.instance)) {
      if (message.type === signalR.MessageType.Invocation && message.target === 'Echo') {
        const answer = protocol.writeMessage({
          type: signalR.MessageType.Completion,
          invocationId: message.invocationId,
          result: message.arguments[0],
          headers: {},
        });
        socket.send(new Uint8Array(answer), { binary: true });
      }
    }
  });
});

server.on('listening', () => {
  console.log(JSON.stringify({ port: server.address().port }));
});
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
