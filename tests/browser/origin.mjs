// Cross-site WebSocket hijacking, tried for real: a page served from another port opens a
// WebSocket to the example server's chat, as any site a user visits could. The default
// example server (no allowed_origins) must refuse it with 403, while its own page, on
// its own origin, opens the same socket. Run by scripts/browser-test.sh.
//
// usage: node tests/browser/origin.mjs BASE_URL
import http from "node:http";
import { launch, STEP_MS } from "./launch.mjs";

const [base] = process.argv.slice(2);
if (!base) {
  console.error("usage: node origin.mjs BASE_URL");
  process.exit(2);
}
const socketUrl = new URL("/ws", base).href.replace(/^http/, "ws");

// The hostile page: it only tries to open the chat socket and says what happened.
const hostile = http.createServer((_request, response) => {
  response.writeHead(200, { "content-type": "text/html; charset=utf-8" });
  response.end("<!doctype html><title>elsewhere</title><p>another site</p>");
});
await new Promise((resolve) => hostile.listen(0, "127.0.0.1", resolve));
const hostileUrl = `http://127.0.0.1:${hostile.address().port}/`;

const browser = await launch();
const watchdog = setTimeout(() => {
  console.error("origin browser test: took longer than 60s");
  process.exit(1);
}, 60_000);

// Opens `url` in a fresh page and, from it, a WebSocket to the chat: "open", or "closed"
// with the handshake's HTTP status as the browser saw it (from the DevTools protocol).
async function trySocketFrom(url) {
  const context = await browser.newContext();
  const page = await context.newPage();
  page.setDefaultTimeout(STEP_MS);
  // An accepted handshake's status comes with its response; a refused one's only in
  // the browser's own log line ("Unexpected response code: 403").
  const devtools = await context.newCDPSession(page);
  await devtools.send("Network.enable");
  await devtools.send("Log.enable");
  let status = null;
  devtools.on("Network.webSocketHandshakeResponseReceived", (event) => {
    status = event.response.status;
  });
  devtools.on("Log.entryAdded", ({ entry }) => {
    const code = /Unexpected response code: (\d+)/.exec(entry.text);
    if (code) status = Number(code[1]);
  });
  await page.goto(url);
  const outcome = await page.evaluate((target) => new Promise((resolve) => {
    const socket = new WebSocket(target);
    socket.onopen = () => { socket.close(); resolve("open"); };
    socket.onclose = () => resolve("closed");
  }), socketUrl);
  const origin = await page.evaluate(() => window.location.origin);
  await context.close();
  return { outcome, status, origin };
}

try {
  const attack = await trySocketFrom(hostileUrl);
  if (attack.outcome !== "closed" || attack.status !== 403) {
    throw new Error(`a page from ${attack.origin} got ${attack.outcome} ` +
                    `(status ${attack.status}), expected closed with 403`);
  }
  const own = await trySocketFrom(base);
  if (own.outcome !== "open" || own.status !== 101) {
    throw new Error(`the server's own page (${own.origin}) got ${own.outcome} ` +
                    `(status ${own.status}), expected open with 101`);
  }
  console.log(`origin browser test: a page from ${attack.origin} was refused with 403, ` +
              `the server's own page (${own.origin}) opened the socket`);
} catch (error) {
  console.error(`origin browser test failed: ${error.message}`);
  process.exitCode = 1;
} finally {
  clearTimeout(watchdog);
  await browser.close();
  hostile.close();
}
