// Echoes messages through the engine with Node's ws client and its
// permessage-deflate, and prints what happened as one JSON line.
// Usage: node client.js ws://HOST:PORT/ws 'OPTIONS'
// OPTIONS is ws's perMessageDeflate object as JSON (false: no offer).
const WebSocket = require('ws');

const [url, optionsJson] = process.argv.slice(2);
const perMessageDeflate = JSON.parse(optionsJson);

// Compressible text, incompressible bytes, and the sizes bench measures.
function text(n) {
  const words = 'the quick brown fox jumps over the lazy dog, évidemment; ';
  return words.repeat(Math.ceil(n / words.length) + 1).slice(0, n);
}
function noise(n) {
  const bytes = Buffer.alloc(n);
  let x = 0x2545f491;
  for (let i = 0; i < n; i++) {
    x ^= x << 13; x ^= x >>> 17; x ^= x << 5;
    bytes[i] = x & 0xff;
  }
  return bytes;
}
const messages = [
  text(0), text(20), text(1024), text(16384), text(300000),
  noise(20), noise(1024), noise(16384), noise(300000),
  text(16384), text(16384), // context takeover makes repeats cheap
];

function run() {
  return new Promise((resolve, reject) => {
    const ws = new WebSocket(url, { perMessageDeflate });
    const result = { extensions: null, echoed: 0, mismatches: [], close: null };
    let next = 0;
    const send = () => ws.send(messages[next]);
    ws.on('open', () => {
      result.extensions = ws.extensions || '';
      send();
    });
    ws.on('message', (data, isBinary) => {
      const sent = messages[next];
      const same = typeof sent === 'string'
        ? !isBinary && data.toString('utf8') === sent
        : isBinary && Buffer.compare(data, sent) === 0;
      if (!same) result.mismatches.push(next);
      result.echoed += 1;
      next += 1;
      if (next < messages.length) send();
      else ws.close(1000, 'done');
    });
    ws.on('close', (code) => {
      result.close = code;
      resolve(result);
    });
    ws.on('error', reject);
  });
}

const timer = setTimeout(() => {
  console.log(JSON.stringify({ error: 'no answer within 20 s' }));
  process.exit(1);
}, 20000);
run()
  .then((result) => {
    clearTimeout(timer);
    result.sent = messages.length;
    console.log(JSON.stringify(result));
  })
  .catch((e) => {
    clearTimeout(timer);
    console.log(JSON.stringify({ error: String(e) }));
    process.exit(1);
  });
