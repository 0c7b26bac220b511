// Drives the echo page and the live view as a person would, in Chromium,
// and prints what it saw as one JSON line.
// Usage: node pages.js http://HOST:PORT SCREENSHOT_DIR
const { chromium } = require('playwright-core');

const [base, shots] = process.argv.slice(2);
const TIMEOUT = 10000;

async function logRows(page) {
  return page.$$eval('#commsLog tr', (rows) => rows.map((r) => [...r.cells].map((c) => c.textContent)));
}

async function waitForLog(page, predicate, what) {
  await page.waitForFunction(
    (source) => [...document.querySelectorAll('#commsLog tr')]
      .some((r) => new Function('cells', `return ${source}`)([...r.cells].map((c) => c.textContent))),
    predicate,
    { timeout: TIMEOUT },
  ).catch(() => { throw new Error(`log never showed ${what}`); });
}

async function tile(page, id) {
  return Number((await page.textContent(`#${id}`)).replace(/,/g, ''));
}

async function waitForTile(page, id, value) {
  await page.waitForFunction(
    ([id, value]) => Number(document.getElementById(id).textContent.replace(/,/g, '')) === value,
    [id, value],
    { timeout: TIMEOUT },
  ).catch(async () => { throw new Error(`${id} stayed ${await tile(page, id)}, expected ${value}`); });
}

(async () => {
  const browser = await chromium.launch({
    executablePath: process.env.CHROMIUM || '/usr/bin/chromium',
    args: ['--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
      '--disable-background-networking', '--disable-component-update', '--disable-sync'],
  });
  const result = {};
  const context = await browser.newContext({ viewport: { width: 1000, height: 720 } });

  // The echo page: Connect, Send, see the echo.
  const echo = await context.newPage();
  await echo.goto(`${base}/`);
  result.prefilledUrl = await echo.inputValue('#connectionUrl');
  result.initialState = await echo.textContent('#stateLabel');
  await echo.click('#connectButton');
  await echo.waitForFunction(() => document.getElementById('stateLabel').textContent === 'Open', null, { timeout: TIMEOUT });
  result.stateAfterConnect = await echo.textContent('#stateLabel');
  await echo.fill('#sendMessage', 'Hello from Chromium');
  await echo.click('#sendButton');
  await waitForLog(echo, "cells[0] === 'Server' && cells[2] === 'Hello from Chromium'", 'the echo');

  // The live view, while that page is connected.
  const live = await context.newPage();
  await live.goto(`${base}/dashboard`);
  await waitForTile(live, 'websockets', 1);
  result.websocketsWithOneClient = await tile(live, 'websockets');

  // A second client, on the hub: the count rises, and Echo comes back.
  const hub = await context.newPage();
  await hub.goto(`${base}/`);
  await hub.selectOption('#protocol', 'hub');
  result.hubUrl = await hub.inputValue('#connectionUrl');
  await hub.click('#connectButton');
  await waitForLog(hub, "cells[2] === 'hub handshake complete'", 'the hub handshake');
  await hub.fill('#sendMessage', 'Hello hub');
  await hub.click('#sendButton');
  await waitForLog(hub, "cells[2] === 'completion 0: \"Hello hub\"'", 'the Echo completion');
  await waitForTile(live, 'websockets', 2);
  result.websocketsWithTwoClients = await tile(live, 'websockets');
  await hub.screenshot({ path: `${shots}/hub-page.png` });
  // Some traffic, through the hub page's own controls, so the chart has a line.
  await hub.evaluate(() => {
    for (let i = 0; i < 300; i++) {
      document.getElementById('sendMessage').value = `burst ${i}`;
      document.getElementById('sendButton').click();
    }
  });
  await waitForLog(hub, "cells[2] === 'completion 300: \"burst 299\"'", 'the last completion');
  await live.waitForTimeout(2500);
  result.coresShown = await live.$$eval('#cores tbody tr', (rows) => rows.length);
  await live.screenshot({ path: `${shots}/dashboard.png`, fullPage: true });

  // The hub on each fallback transport, chosen on the page: the handshake,
  // an Echo, and Close.
  result.fallback = {};
  for (const transport of ['sse', 'longpolling']) {
    const fallback = await context.newPage();
    await fallback.goto(`${base}/`);
    await fallback.selectOption('#protocol', 'hub');
    await fallback.selectOption('#transport', transport);
    const out = { url: await fallback.inputValue('#connectionUrl') };
    await fallback.click('#connectButton');
    await waitForLog(fallback, "cells[2] === 'hub handshake complete'", `the hub handshake over ${transport}`);
    await fallback.fill('#sendMessage', `Hello over ${transport}`);
    await fallback.click('#sendButton');
    await waitForLog(fallback, `cells[2] === 'completion 0: "Hello over ${transport}"'`, `the Echo completion over ${transport}`);
    out.stateWhenOpen = await fallback.textContent('#stateLabel');
    if (transport === 'longpolling') await fallback.screenshot({ path: `${shots}/hub-long-polling.png` });
    await fallback.click('#closeButton');
    await fallback.waitForFunction(() => document.getElementById('stateLabel').textContent.startsWith('Closed'), null, { timeout: TIMEOUT });
    out.stateAfterClose = await fallback.textContent('#stateLabel');
    result.fallback[transport] = out;
    await fallback.close();
  }

  // Close Socket: the state says Closed, with code 1000 in the log.
  await echo.fill('#sendMessage', 'Last words');
  await echo.click('#sendButton');
  await waitForLog(echo, "cells[0] === 'Server' && cells[2] === 'Last words'", 'the last echo');
  await echo.click('#closeButton');
  await echo.waitForFunction(() => document.getElementById('stateLabel').textContent.startsWith('Closed'), null, { timeout: TIMEOUT });
  result.stateAfterClose = await echo.textContent('#stateLabel');
  result.echoLog = await logRows(echo);
  await echo.screenshot({ path: `${shots}/echo-page.png` });
  await waitForTile(live, 'websockets', 1);
  result.websocketsAfterClose = await tile(live, 'websockets');

  await browser.close();
  console.log(JSON.stringify(result));
})().catch((e) => {
  console.log(JSON.stringify({ error: String(e && e.stack || e) }));
  process.exit(1);
});
