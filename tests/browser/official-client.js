// The official SignalR client in Chromium, in both encodings and on every
// transport: its browser bundles (@microsoft/signalr and
// @microsoft/signalr-protocol-msgpack, from tests/signalr) load into the
// engine's own page, so that negotiation is same-origin, and talk to /hub as
// a web app would. Prints one JSON line: for each case (encoding and
// transport: events carry text only, so JSON only), what Echo returned,
// whether a broadcast reached a listener on the same transport and a
// MessagePack listener on WebSockets, and whether the connection stopped
// cleanly.
// Usage: node official-client.js http://HOST:PORT
const path = require('path');
const { chromium } = require('playwright-core');

const base = process.argv[2];
const modules = path.join(__dirname, '..', 'signalr', 'node_modules', '@microsoft');

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const page = await browser.newPage();
  await page.goto(`${base}/`);
  await page.addScriptTag({ path: path.join(modules, 'signalr', 'dist', 'browser', 'signalr.js') });
  await page.addScriptTag({
    path: path.join(modules, 'signalr-protocol-msgpack', 'dist', 'browser', 'signalr-protocol-msgpack.js'),
  });
  const result = {};
  const cases = [['json', 'WebSockets'], ['messagepack', 'WebSockets'], ['json', 'ServerSentEvents'],
    ['json', 'LongPolling'], ['messagepack', 'LongPolling']];
  for (const [encoding, transport] of cases) {
    result[`${encoding} ${transport}`] = await page.evaluate(async ([encoding, transport]) => {
      const connect = (as, over = transport) => {
        const builder = new signalR.HubConnectionBuilder()
          .withUrl('/hub', { transport: signalR.HttpTransportType[over] })
          .configureLogging(signalR.LogLevel.Error);
        if (as === 'messagepack') {
          builder.withHubProtocol(new signalR.protocols.msgpack.MessagePackHubProtocol());
        }
        return builder.build();
      };
      const out = {};
      const connection = connect(encoding);
      await connection.start();
      out.string = await connection.invoke('Echo', 'héllo 😀');
      out.object = await connection.invoke('Echo', { a: [1, 'x', null], b: { c: true } });
      if (encoding === 'messagepack') {
        const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 13) & 0xff);
        const back = await connection.invoke('Echo', bytes);
        out.bytesEchoed = back instanceof Uint8Array && back.length === bytes.length
          && back.every((b, i) => b === bytes[i]);
      }
      out.transport = connection.connection.transport.constructor.name;
      const listeners = [connect(encoding), connect('messagepack', 'WebSockets')];
      const heard = listeners.map((l) => new Promise((resolve) => l.on('Receive', resolve)));
      await Promise.all(listeners.map((l) => l.start()));
      await connection.invoke('SendToAll', { from: encoding });
      out.received = await Promise.race([
        Promise.all(heard),
        new Promise((_, reject) => setTimeout(() => reject(new Error('no Receive in 5 s')), 5000)),
      ]);
      let closeError = 'onclose never called';
      connection.onclose((e) => { closeError = e ? e.message : null; });
      await connection.stop();
      out.stopClean = closeError === null;
      await Promise.all(listeners.map((l) => l.stop()));
      return out;
    }, [encoding, transport]);
  }
  console.log(JSON.stringify(result));
  await browser.close();
})().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack || e) }));
  process.exit(1);
});
