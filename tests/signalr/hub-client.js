// Drives the ringecho hub endpoint with the official SignalR client and
// prints what happened as one JSON line.
// Usage: node hub-client.js http://HOST:PORT/hub [json|messagepack]
//          [websockets|sse|longpolling]
// The protocol and transport are those of the connections that invoke. The
// listeners of the broadcast alternate between both encodings (where the
// transport carries binary), and half of them are on WebSockets, so that a
// broadcast crosses encodings, transports and cores.
const signalR = require('@microsoft/signalr');
const { MessagePackHubProtocol } = require('@microsoft/signalr-protocol-msgpack');

const url = process.argv[2];
const protocol = process.argv[3] || 'json';
const { WebSockets, ServerSentEvents, LongPolling } = signalR.HttpTransportType;
const transport = {
  websockets: WebSockets,
  sse: ServerSentEvents,
  longpolling: LongPolling,
}[process.argv[4] || 'websockets'];

function connect(options, encoding = protocol) {
  const builder = new signalR.HubConnectionBuilder()
    .withUrl(url, { transport, ...options })
    .configureLogging(signalR.LogLevel.Error);
  if (encoding === 'messagepack') {
    builder.withHubProtocol(new MessagePackHubProtocol());
  }
  return builder.build();
}

function within(ms, promise, what) {
  return Promise.race([
    promise,
    new Promise((_, reject) => setTimeout(() => reject(new Error(`${what}: no answer in ${ms} ms`)), ms).unref()),
  ]);
}

async function main() {
  const result = {};
  const negotiated = connect({});
  await negotiated.start();
  result.negotiatedId = negotiated.connectionId;
  result.string = await negotiated.invoke('Echo', 'hello');
  result.number = await negotiated.invoke('Echo', 42.5);
  result.object = await negotiated.invoke('Echo', { a: [1, 'x', null], b: { c: true } });
  const big = 'é'.repeat(32768); // 64 KiB of UTF-8
  result.bigEchoed = (await negotiated.invoke('Echo', big)) === big;
  if (protocol === 'messagepack') {
    // Binary travels as MessagePack bin, and comes back as bytes.
    const bytes = Uint8Array.from({ length: 3000 }, (_, i) => (i * 7) & 0xff);
    const back = await negotiated.invoke('Echo', bytes);
    result.binaryEchoed = back instanceof Uint8Array && back.length === bytes.length
      && back.every((b, i) => b === bytes[i]);
  }
  try {
    await negotiated.invoke('NoSuchMethod', 1);
    result.unknownMethod = 'no error';
  } catch (e) {
    result.unknownMethod = e.message;
  }
  // A StreamInvocation: this hub streams nothing, and says so; the
  // client's CancelInvocation on disposing is read and ignored.
  result.streamError = await within(5000, new Promise((resolve) => {
    const subscription = negotiated.stream('Echo', 'x').subscribe({
      next: () => resolve('an item'),
      complete: () => resolve('completed'),
      error: (e) => { resolve(e.message); setTimeout(() => subscription.dispose(), 0); },
    });
  }), 'stream');
  result.afterStream = await negotiated.invoke('Echo', 'still here');

  // Only WebSockets may skip negotiation.
  const direct = connect({ skipNegotiation: transport === WebSockets });
  await direct.start();
  result.skipNegotiation = await direct.invoke('Echo', 'direct');
  result.transport = negotiated.connection.transport.constructor.name;

  // Several listeners, so that with two workers some sit on each core;
  // on a fallback transport, half of them are on it.
  const listeners = [];
  const heard = [];
  result.listenerProtocols = [];
  result.listenerTransports = [];
  for (let i = 0; i < 8; i++) {
    const own = transport === WebSockets || i % 2 === 1 ? WebSockets : transport;
    const encoding = Math.floor(i / 2) % 2 === 0 || own === ServerSentEvents ? 'json' : 'messagepack';
    result.listenerProtocols.push(encoding);
    const options = own === WebSockets ? { transport: WebSockets, skipNegotiation: i % 2 === 0 } : {};
    const listener = connect(options, encoding);
    const got = new Promise((resolve) => listener.on('Receive', resolve));
    await listener.start();
    result.listenerTransports.push(listener.connection.transport.constructor.name);
    listeners.push(listener);
    heard.push(got);
  }
  const stats = await (await fetch(url.replace(/\/hub$/, '/stats'))).json();
  result.websocketsPerWorker = stats.workers.map((w) => w.open_websockets);
  result.fallbackConnections = stats.transports.open_fallback_connections;
  await direct.invoke('SendToAll', { news: 'for everyone' });
  result.received = await within(5000, Promise.all(heard), 'Receive');

  let closeError = 'onclose never called';
  negotiated.onclose((e) => { closeError = e ? e.message : null; });
  await negotiated.stop();
  result.stopClean = closeError === null;
  result.stateAfterStop = negotiated.state;
  await Promise.all([direct, ...listeners].map((c) => c.stop()));
  console.log(JSON.stringify(result));
}

main().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack || e) }));
  process.exit(1);
});
